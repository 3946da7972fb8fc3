"""Data, models, metrics, training loop, tasks: the pieces every step relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automc_env import data as D
from automc_env.metrics import accuracy, count_flops, count_params
from automc_env.models import build_model, model_arch
from automc_env.tasks import TASKS, get_task
from automc_env.training import kd_loss, resolve_device, train


# ---- models and counting (paper scale, on tiny inputs: no training) ---------------------------------

@pytest.mark.parametrize("name,classes,params_m,macs_m", [
    ("resnet56", 10, 0.9008, 132.30),   # paper Table 2: 0.90 M (projection shortcuts in every block)
    ("resnet20", 10, 0.2839, 42.65),
    ("resnet164", 10, 2.7515, 401.26),
    ("vgg16", 100, 14.7744, 313.25),    # paper Table 2: 14.77 M
    ("vgg13", 100, 9.4622, 228.31),
    ("vgg19", 100, 20.0867, 398.18),
])
def test_paper_models_parameter_and_flop_counts(name, classes, params_m, macs_m):
    model = build_model(model_arch(name, classes))
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=1e-4)
    assert count_flops(model, (3, 32, 32)) / 1e6 == pytest.approx(macs_m, abs=0.01)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, classes)


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="resnet56"):
        model_arch("resnet57", 10)


def test_accuracy_is_sample_weighted():
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()
    y = torch.tensor([0, 0, 0, 1, 2])
    assert accuracy(Const(), torch.zeros(5, 1), y, batch_size=2) == pytest.approx(60.0)


# ---- data ---------------------------------------------------------------------------------------------

def test_augmentation_is_a_shifted_crop_and_flip_on_device():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = D.augment_batch(x, D.Augment(pad=1, flip=True), g)
    assert out.shape == x.shape
    for i in range(2):  # every output is a (possibly flipped) window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        windows = [padded[:, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    same = D.augment_batch(x, D.Augment(pad=1, flip=True), torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


@pytest.mark.parametrize("channels", [1, 3])
def test_augmented_batches_have_plain_nchw_strides_so_convolutions_run_nchw(channels):
    """Benchmark version 1's bug: a one-channel crop kept channels-last strides (still 'contiguous'),
    so a conv on it ran oneDNN's channels-last kernels, whose AVX2 backward corrupted the heap."""
    x = torch.randn(4, channels, 8, 8)
    out = D.augment_batch(x, D.Augment(pad=1, flip=True), torch.Generator().manual_seed(0))
    assert out.stride() == torch.empty(out.shape).stride()
    y = torch.nn.Conv2d(channels, 6, 3, padding=1)(out)
    assert y.stride() == torch.empty(y.shape).stride()   # channels-last input would give channels-last output


def test_batches_fractional_limit_and_shuffle_reproducible():
    d = D.DeviceData(torch.randn(10, 1, 2, 2), torch.arange(10))
    assert [len(y) for _, y in d.batches(4)] == [4, 4, 2]
    assert len(list(d.batches(4, limit=2))) == 2
    a = [y.tolist() for _, y in d.batches(4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    b = [y.tolist() for _, y in d.batches(4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert a == b and sorted(sum(a, [])) == list(range(10))


def test_stratified_sample_keeps_class_shares_and_correct_ratio():
    y = np.repeat(np.arange(4), 100)
    idx = D.stratified_sample(y, 0.1, seed=0)
    assert np.bincount(y[idx]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(idx, D.stratified_sample(y, 0.1, seed=0))
    correct = np.tile(np.arange(100) < 80, 4)  # 80 % correct in every class
    idx = D.stratified_sample(y, 0.1, seed=0, correct=correct)
    assert correct[idx].sum() == 4 * 8


def test_cifar_reader_on_a_synthetic_folder(tmp_path):
    D.write_synthetic_cifar(tmp_path, "cifar10", train_per_class=10, test_per_class=2)  # str keys
    raw = D.load_cifar("cifar10", root=tmp_path)
    assert raw.train_x.shape == (100, 3, 32, 32) and raw.test_x.shape == (20, 3, 32, 32)
    assert raw.train_x.dtype == np.uint8 and raw.num_classes == 10
    assert np.bincount(raw.train_y).tolist() == [10] * 10 and np.bincount(raw.test_y).tolist() == [2] * 10
    dev = D.to_device(raw.train_x, raw.train_y, raw.mean, raw.std, "cpu")
    assert dev.x.dtype == torch.float32 and dev.x.shape == (100, 3, 32, 32)
    D.write_synthetic_cifar(tmp_path, "cifar100", train_per_class=2, test_per_class=1)
    raw = D.load_cifar("cifar100", root=tmp_path)
    assert raw.train_x.shape == (200, 3, 32, 32) and raw.num_classes == 100 and len(set(raw.test_y)) == 100


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python") as e:
        D.load_cifar("cifar100", root=tmp_path)
    assert str(tmp_path) in str(e.value) and "AUTOMC_DATA" in str(e.value)


def test_digits_task_splits_are_disjoint_and_seeded():
    task = get_task("digits")
    a, b = task.load_data(seed=0), task.load_data(seed=0)
    assert torch.equal(a.val.y, b.val.y)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.train.x.shape[1:] == (1, 8, 8)


# ---- tasks --------------------------------------------------------------------------------------------

def test_task_registry_has_the_paper_tasks():
    for name in ("resnet56-cifar10-mini", "vgg16-cifar100-mini", "resnet20-cifar10", "resnet164-cifar10",
                 "vgg13-cifar100", "vgg19-cifar100", "digits", "synthetic"):
        assert name in TASKS
    mini = get_task("resnet56-cifar10-mini")
    assert (mini.gamma, mini.pretrain_epochs, mini.search_fraction, mini.max_len) == (0.3, 50, 0.1, 5)
    assert get_task("vgg16-cifar100").pretrain_epochs == 200
    with pytest.raises(ValueError, match="registered tasks"):
        get_task("imagenet")


# ---- training loop ------------------------------------------------------------------------------------

def _tiny():
    task = get_task("synthetic")
    torch.manual_seed(0)
    return task, task.load_data(seed=0), task.build_model()


def test_training_learns_and_fractional_epochs_count_batches():
    task, data, model = _tiny()
    before = accuracy(model, data.val.x, data.val.y)
    r = train(model, data.train, epochs=2.5, lr=0.05, batch_size=32, generator=torch.Generator().manual_seed(0),
              val=data.val)
    assert r.batches == int(round(2.5 * 8)) and r.epochs == pytest.approx(2.5)
    assert r.best_acc > max(before, 60)


def test_training_is_reproducible_and_zero_epochs_is_a_no_op():
    runs = []
    for _ in range(2):
        task, data, model = _tiny()
        train(model, data.train, epochs=1, lr=0.05, batch_size=32, generator=torch.Generator().manual_seed(3),
              augment=D.Augment(pad=1, flip=True))
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    task, data, model = _tiny()
    w = [p.clone() for p in model.parameters()]
    train(model, data.train, epochs=0, lr=0.05, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(w, model.parameters()))


def test_select_best_restores_the_best_epoch_and_hooks_run():
    task, data, model = _tiny()
    calls = []
    r = train(model, data.train, epochs=3, lr=0.05, batch_size=32, generator=torch.Generator().manual_seed(0),
              val=data.val, select_best=True, on_epoch_end=lambda e, last: calls.append((e, last)))
    assert calls == [(1, False), (2, False), (3, True)]
    assert r.best_acc == max(a for _, a in r.history)
    assert accuracy(model, data.val.x, data.val.y) == r.best_acc


def test_kd_loss_terms():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 2.0, 0.0) == pytest.approx(float(ce))
    assert kd_loss(s, s, y, 2.0, 1.0) == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, t, y, 2.0, 1.0, "mean") * 3 == pytest.approx(float(kd_loss(s, t, y, 2.0, 1.0)), rel=1e-5)


def test_bad_training_arguments_raise():
    task, data, model = _tiny()
    with pytest.raises(ValueError, match="epochs"):
        train(model, data.train, epochs=-1, lr=0.1, batch_size=8)
    with pytest.raises(ValueError, match="schedule"):
        train(model, data.train, epochs=1, lr=0.1, batch_size=8, schedule="cosine")


def test_device_auto():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_multistep_milestones_fire_only_on_whole_epochs():
    """methods.md §0.3: float milestones at 25/50/75 % of the epochs fire only on a whole epoch."""
    from automc_env.training import milestone_epochs
    assert milestone_epochs(5) == [] and milestone_epochs(15) == [] and milestone_epochs(25) == []
    assert milestone_epochs(10) == [5]
    assert milestone_epochs(20) == [5, 10, 15]
    assert milestone_epochs(200) == [50, 100, 150]
    assert milestone_epochs(1.8) == []


def test_short_multistep_runs_keep_their_learning_rate(monkeypatch):
    """A 1-epoch run of 3 batches never decays (the old per-batch rule decayed before the first step)."""
    data = D.make_synthetic_splits(num_classes=4, size=8, channels=1)
    x = torch.as_tensor(data.train_x[:96]).float()
    y = torch.as_tensor(data.train_y[:96]).long()
    dd = D.DeviceData(x, y)
    seen = []
    model = build_model(model_arch("resnet8", 4, 1, 8))

    class Spy(torch.optim.SGD):
        def step(self, *a, **k):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)

    monkeypatch.setattr(torch.optim, "SGD", Spy)
    train(model, dd, epochs=1, lr=0.1, batch_size=32, generator=torch.Generator().manual_seed(0))
    seen_one = list(seen)
    seen.clear()
    train(model, dd, epochs=4, lr=0.1, batch_size=32, generator=torch.Generator().manual_seed(0))
    assert seen_one == [0.1, 0.1, 0.1]
    assert seen == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 3 + [0.0001] * 3)


def test_full_data_paper_tasks_validate_on_the_whole_test_split(tmp_path, monkeypatch):
    """The paper selects on the official test split: val is all of it (not half) on the full-data tasks."""
    D.write_synthetic_cifar(tmp_path, "cifar10", train_per_class=10, test_per_class=2)
    monkeypatch.setenv("AUTOMC_DATA", str(tmp_path))
    full = get_task("resnet56-cifar10").load_data("cpu")
    assert len(full.val) == 20 and torch.equal(full.val.y, full.test.y) and len(full.train) == 100
    mini = get_task("resnet56-cifar10-mini").load_data("cpu")
    assert len(mini.val) < 20 and len(mini.val) + len(mini.test) == 20
