"""Pinned base models: shipped files match the manifest, the env keys its cache by the base weights,
pre-training is independent of the thread count, and nothing generated is pickled."""

from __future__ import annotations

import hashlib
import json

import pytest
import safetensors.torch
import torch

import automc_env.env as env_module
from automc_env import pretrain
from automc_env.cli import main
from automc_env.env import AutoMCEnv
from automc_env.fingerprint import BENCHMARK_VERSION
from automc_env.store import EvaluationStore
from automc_env.tasks import get_task, with_options

SHIPPED = ("digits", "digits-vgg", "synthetic", "synthetic-vgg")


def _no_pretraining(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pre-training was not expected")

    monkeypatch.setattr(pretrain, "pretrain", refuse)
    monkeypatch.setattr(pretrain, "train_base", refuse)


def _capture_fingerprint_payload(monkeypatch) -> list[dict]:
    seen: list[dict] = []
    real = env_module.digest

    def spy(payload):
        seen.append(payload)
        return real(payload)

    monkeypatch.setattr(env_module, "digest", spy)
    return seen


def _perturbed_state(task_name: str) -> dict[str, torch.Tensor]:
    state = pretrain.read_state(pretrain.SHIPPED_DIR / f"{task_name}-seed0.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1e-3
    return state


@pytest.mark.parametrize("name", SHIPPED)
def test_manifest_matches_the_shipped_files(name):
    task = get_task(name)
    entry = pretrain.read_manifest()["models"][f"{name}-seed0.safetensors"]
    path = pretrain.SHIPPED_DIR / f"{name}-seed0.safetensors"
    assert path.stat().st_size < 400_000
    state = pretrain.read_state(path)
    assert pretrain.weights_digest(state) == entry["sha256"]
    assert (entry["task"], entry["seed"], entry["benchmark_version"]) == (name, 0, BENCHMARK_VERSION)
    assert (entry["device"], entry["precision"], entry["threads"]) == ("cpu", "fp32", 1)
    assert entry["seconds"] > 0 and entry["torch"]
    assert pretrain.shipped_record(task, 0) == entry  # made for the current task definition
    # the recorded metrics are the real ones
    model = pretrain.load_checkpoint(task, path, torch.device("cpu"))
    got = pretrain.measure(model, task, task.load_data("cpu", seed=0), test=True)
    assert (got["acc"], got["test_acc"], got["params"], got["flops"]) == \
        (entry["val_acc"], entry["test_acc"], entry["params"], entry["flops"])


def test_weights_digest_is_sorted_keys_and_little_endian_bytes():
    state = pretrain.read_state(pretrain.SHIPPED_DIR / "synthetic-seed0.safetensors")
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].numpy().astype(state[key].numpy().dtype.newbyteorder("<")).tobytes())
    reordered = dict(reversed(list(state.items())))
    assert pretrain.weights_digest(reordered) == pretrain.weights_digest(state) == h.hexdigest()


def test_env_loads_the_shipped_digits_model_without_pretraining(monkeypatch, tmp_path):
    _no_pretraining(monkeypatch)
    monkeypatch.setattr(pretrain, "measure", lambda *a, **k: pytest.fail("base metrics come from the manifest"))
    payloads = _capture_fingerprint_payload(monkeypatch)
    store = EvaluationStore(tmp_path / "store")
    env = AutoMCEnv(task="digits", store=store)
    entry = pretrain.read_manifest()["models"]["digits-seed0.safetensors"]
    assert env.base_digest == entry["sha256"] == pretrain.weights_digest(env.base_model)
    assert env.base == {"acc": entry["val_acc"], "params": entry["params"], "flops": entry["flops"]}
    payload = next(p for p in payloads if p.get("base") == env.base_digest and "device" in p)
    assert env_module.digest(payload) == env.fingerprint
    assert (payload["benchmark"], payload["device"], payload["precision"]) == (BENCHMARK_VERSION, "cpu", "fp32")
    described = {e["fingerprint"]: e["description"] for e in store.fingerprints()}[env.fingerprint]
    assert described["base"] == entry["sha256"] and described["benchmark"] == BENCHMARK_VERSION
    assert described["base_source"] == "shipped"


def test_another_base_model_gives_another_fingerprint(tmp_path):
    shipped = AutoMCEnv(task="synthetic", store=False)
    same = tmp_path / "same.pt"
    torch.save({"state_dict": shipped.base_model.state_dict()}, same)
    assert AutoMCEnv(task="synthetic", store=False, checkpoint=same).fingerprint == shipped.fingerprint
    perturbed = _perturbed_state("synthetic")
    for path in (tmp_path / "mine.safetensors", tmp_path / "mine.pt"):
        if path.suffix == ".pt":
            torch.save(perturbed, path)
        else:
            safetensors.torch.save_file(perturbed, path)
        env = AutoMCEnv(task="synthetic", store=False, checkpoint=path)
        assert env.base_digest == pretrain.weights_digest(perturbed) != shipped.base_digest
        assert env.fingerprint != shipped.fingerprint


def test_device_type_and_precision_policy_are_in_the_fingerprint(monkeypatch):
    payloads = _capture_fingerprint_payload(monkeypatch)
    cpu = AutoMCEnv(task="synthetic", store=False)
    payload = next(p for p in payloads if p.get("base") == cpu.base_digest and "device" in p)
    assert (payload["device"], payload["precision"]) == (cpu.device.type, "fp32")
    assert env_module.digest({**payload, "device": "cuda"}) != cpu.fingerprint
    monkeypatch.setattr(env_module, "precision_policy", lambda device: "bf16")
    bf16 = AutoMCEnv(task="synthetic", store=False)
    assert bf16.base_digest == cpu.base_digest and bf16.fingerprint != cpu.fingerprint


def test_cache_is_pickle_free_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOMC_HOME", str(tmp_path))
    task = get_task("synthetic")
    data = task.load_data("cpu", seed=1)
    first = pretrain.load_base(task, data, 1, torch.device("cpu"), progress=False)  # seed 1 is not shipped
    assert first.source == "pretrained"
    files = sorted((tmp_path / "pretrained").iterdir())
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    assert "-cpu-fp32-" in files[1].name
    sidecar = json.loads(files[0].read_text())
    assert sidecar["sha256"] == first.digest == pretrain.weights_digest(safetensors.torch.load_file(files[1]))
    assert {"val_acc", "test_acc", "params", "flops", "seconds", "torch", "threads"} <= set(sidecar)
    for f in files:
        assert not f.read_bytes().startswith((b"\x80", b"PK"))  # neither a pickle nor a torch.save zip
    _no_pretraining(monkeypatch)
    again = pretrain.load_base(task, data, 1, torch.device("cpu"), progress=False)
    assert (again.source, again.digest) == ("cached", first.digest)
    assert again.metrics(torch.device("cpu"))["acc"] == sidecar["val_acc"]


def test_pretraining_does_not_depend_on_the_thread_count():
    task = get_task("synthetic")
    data = task.load_data("cpu", seed=0)
    before = torch.get_num_threads()
    hashes = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            _, record = pretrain.train_base(task, data, 0, torch.device("cpu"), progress=False)
            assert torch.get_num_threads() == threads  # restored after pre-training
            hashes.append(record["sha256"])
    finally:
        torch.set_num_threads(before)
    assert hashes[0] == hashes[1] == pretrain.read_manifest()["models"]["synthetic-seed0.safetensors"]["sha256"]


def test_cli_pretrain_reports_a_match_and_what_differs(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AUTOMC_HOME", str(tmp_path))
    shipped_file = pretrain.SHIPPED_DIR / "synthetic-seed0.safetensors"
    shipped_bytes = shipped_file.read_bytes()
    assert main(["pretrain", "--task", "synthetic", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "matches the shipped base model synthetic-seed0.safetensors" in out
    assert str(tmp_path / "pretrained") in out and shipped_file.read_bytes() == shipped_bytes
    manifest = pretrain.read_manifest()
    entry = manifest["models"]["synthetic-seed0.safetensors"]
    entry.update(sha256="0" * 64, val_acc=12.5)
    monkeypatch.setattr(pretrain, "read_manifest", lambda: manifest)
    assert main(["pretrain", "--task", "synthetic", "--device", "cpu"]) == 1  # served from the cache
    out = capsys.readouterr().out
    assert "already pre-trained" in out and "DIFFERS from the shipped base model" in out
    assert "sha256" in out and "val_acc" in out and "12.5" in out


def test_checkpoints_that_do_not_fit_raise_a_clear_value_error(tmp_path):
    synthetic = get_task("synthetic")
    digits_state = pretrain.read_state(pretrain.SHIPPED_DIR / "digits-seed0.safetensors")  # 10 classes, not 4
    for path in (tmp_path / "digits.safetensors", tmp_path / "digits.pt"):
        if path.suffix == ".pt":
            torch.save(digits_state, path)
        else:
            safetensors.torch.save_file(digits_state, path)
        with pytest.raises(ValueError, match="does not fit the resnet8 of task synthetic"):
            pretrain.load_checkpoint(synthetic, path, torch.device("cpu"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        pretrain.load_checkpoint(synthetic, garbage, torch.device("cpu"))
    with pytest.raises(ValueError, match="does not fit"):
        AutoMCEnv(task="synthetic", store=False, checkpoint=tmp_path / "digits.pt")


def test_task_variants_get_the_shipped_model_only_if_pretraining_is_the_same():
    synthetic = get_task("synthetic")
    assert pretrain.shipped_record(with_options(synthetic, gamma=0.5, description="x"), 0) is not None
    with pytest.warns(UserWarning, match="pretrain_epochs=1"):
        assert pretrain.shipped_record(with_options(synthetic, pretrain_epochs=1), 0) is None
    assert pretrain.shipped_record(synthetic, 1) is None
