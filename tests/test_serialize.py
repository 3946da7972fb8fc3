"""Pickle-free checkpoints: every model the compressors make round-trips exactly, and a file cannot run code."""

from __future__ import annotations

import copy
import json
import os
import pickle
from functools import lru_cache
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

from automc_env import serialize
from automc_env.metrics import count_params
from automc_env.serialize import SerializationError
from compressors import get_compressor
from compressors.lfb import FilterBasisConv, SharedBasis
from compressors.lma import LMAUnit
from tests.conftest import make_context, pretrained

SETTINGS = {
    "LMA": {"ft": 0.25, "seg": 8, "T": 3, "alpha": 0.5},
    "LeGR": {"ft": 0.0, "max_prune": 0.9, "evo": 0.25, "crit": "l2_bn"},
    "NS": {"ft": 0.25, "max_prune": 0.9},
    "SFP": {"soft": 0.25, "every": 1},
    "HOS": {"ft": 0.0, "layer": "P2", "filter": "k34", "aux": 0.25, "mse_weight": 1},
    "LFB": {"ft": 0.25, "factor": 1.0, "loss": "CE"},
}
GROUPED_LFB = ("LFB", (("groups", 2),))  # g = 2: SharedBasis layers with their frozen, unprunable guard
METHODS = [(m, ()) for m in SETTINGS] + [GROUPED_LFB]
CHAINS = [(("HOS", ()), ("NS", ())), (GROUPED_LFB, ("LeGR", ())), (("LMA", ()), ("SFP", ())),
          (("NS", ()), ("LFB", ())), (("SFP", ()), ("HOS", ())), (("LeGR", ()), ("LMA", ()))]
_MODULE_INTERNALS = set(vars(nn.Module()))


def step(task_name: str, model: nn.Module, method: str, options: tuple, removal: float, original: int,
         seed: int = 0) -> nn.Module:
    """One compression step on a copy of ``model`` (global RNG seeded too, so two runs are comparable)."""
    task, data, _ = pretrained(task_name)
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    ctx = make_context(task, data, model, removal, original_params=original, seed=seed, options=dict(options))
    return get_compressor(method).compress(model, {**SETTINGS[method], "dec": removal}, ctx)


@lru_cache(maxsize=None)
def compressed(task_name: str, method: str, options: tuple = ()) -> nn.Module:
    """The pre-trained model of the task after one step of ``method`` removing 30 % (cached; copy before use)."""
    _, _, model = pretrained(task_name)
    return step(task_name, model, method, options, 0.3, count_params(model))


def example(task_name: str) -> torch.Tensor:
    return pretrained(task_name)[1].val.x[:32]


def round_trip(model: nn.Module) -> nn.Module:
    return serialize.loads(serialize.dumps(model))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    assert torch.equal(bits(a), bits(b))


def assert_identical(original: nn.Module, loaded: nn.Module, x: torch.Tensor | None = None) -> None:
    """Same class tree, sharing, attributes, flags, state_dict bits and outputs (eval and train mode)."""
    ours = list(original.named_modules(remove_duplicate=False))
    theirs = list(loaded.named_modules(remove_duplicate=False))
    assert [(n, type(m)) for n, m in ours] == [(n, type(m)) for n, m in theirs]
    pairs: dict[int, int] = {}
    for (name, m), (_, l) in zip(ours, theirs):
        assert pairs.setdefault(id(m), id(l)) == id(l), f"sharing of {name} differs"
        assert m.training == l.training, name
        plain = {k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS}
        assert repr(plain) == repr({k: v for k, v in vars(l).items() if k not in _MODULE_INTERNALS}), name
        assert [(n, type(p), p.requires_grad) for n, p in m.named_parameters(recurse=False)] == \
               [(n, type(p), p.requires_grad) for n, p in l.named_parameters(recurse=False)], name
    assert len(set(pairs.values())) == len(pairs)
    state, loaded_state = original.state_dict(), loaded.state_dict()
    assert list(state) == list(loaded_state)
    for key in state:
        assert_same_bits(state[key], loaded_state[key])
    if x is not None:
        for train in (False, True):
            a, b = copy.deepcopy(original).train(train), copy.deepcopy(loaded).train(train)
            with torch.no_grad():
                assert_same_bits(a(x), b(x))
            for key, value in a.state_dict().items():  # train mode updates running statistics alike
                assert_same_bits(value, b.state_dict()[key])


# ---- exact round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
def test_pretrained_models_round_trip(task_name):
    _, _, model = pretrained(task_name)
    loaded = round_trip(model)
    assert_identical(model, loaded, example(task_name))
    assert loaded.arch == model.arch and isinstance(loaded.arch["family"], str)
    if task_name == "synthetic":
        assert loaded.arch["widths"] == (16, 32, 64)  # a tuple stays a tuple


@pytest.mark.parametrize("task_name", ["synthetic", "synthetic-vgg"])
@pytest.mark.parametrize("method, options", METHODS, ids=lambda v: v if isinstance(v, str) else str(dict(v) or ""))
def test_compressed_models_round_trip(task_name, method, options):
    model = compressed(task_name, method, options)
    loaded = round_trip(model)
    assert_identical(model, loaded, example(task_name))
    if method == "HOS":
        cores = [n for n, m in loaded.named_modules() if getattr(m, "tucker_core", False)]
        assert cores and cores == [n for n, m in model.named_modules() if getattr(m, "tucker_core", False)]
    if method == "LMA":
        units = [m for m in loaded.modules() if isinstance(m, LMAUnit)]
        assert units and all(int(u.num_batches_tracked) > 0 for u in units)  # running statistics travel
        assert loaded.arch["activation"] == "lma"
    if method == "LFB":
        assert any(isinstance(m, FilterBasisConv) for m in loaded.modules())
    if options:  # g > 1: the guard keeps its frozen identity weight and both unprunable markers
        shared = [m for m in loaded.modules() if isinstance(m, SharedBasis)]
        assert shared
        for m in shared:
            assert not m.guard.weight.requires_grad and m.guard.unprunable is True and m.conv.unprunable is True
            assert "unprunable" not in vars(m)  # a class attribute, as in the original


@pytest.mark.parametrize("first, second", CHAINS, ids=lambda step_: step_[0] + ("(g=2)" if step_[1] else ""))
def test_loaded_model_compresses_like_the_original(first, second):
    """A checkpoint is the model for all practical purposes: the next step on it gives the same bits."""
    _, _, base = pretrained("synthetic")
    original = count_params(base)
    model = compressed("synthetic", *first)
    loaded = round_trip(model)
    a = step("synthetic", model, *second, removal=0.2, original=original, seed=1)
    b = step("synthetic", loaded, *second, removal=0.2, original=original, seed=1)
    assert count_params(a) < count_params(model)
    assert_identical(a, b, example("synthetic"))
    assert_identical(a, round_trip(a), example("synthetic"))


def test_shared_modules_stay_shared(tmp_path):
    """LMA's share=True puts one unit at every site: stored once, loaded as one module."""
    task, data, model = pretrained("synthetic-vgg")
    ctx = make_context(task, data, model, 0.3, options={"share": True})
    model = get_compressor("LMA").compress(model, {**SETTINGS["LMA"], "ft": 0.0, "dec": 0.3}, ctx)
    path = tmp_path / "shared.safetensors"
    serialize.save_model(model, path)
    loaded = serialize.load_model(path)
    assert_identical(model, loaded, example("synthetic-vgg"))
    units = {id(m) for m in loaded.modules() if isinstance(m, LMAUnit)}
    assert len(units) == 1 and sum(isinstance(m, LMAUnit) for m in loaded.features) > 1
    stored = safetensors.torch.load_file(path)  # the unit's tensors once, under its first path
    assert len([k for k in stored if k.endswith("base_slope")]) == 1
    sites = [m for m in model.features if isinstance(m, LMAUnit)]
    assert len([k for k in model.state_dict() if k.endswith("base_slope")]) == len(sites) > 1


def test_dtype_training_and_requires_grad_flags_round_trip():
    _, _, model = pretrained("synthetic")
    model = model.double().eval()
    model.blocks.train()
    model.fc.weight.requires_grad_(False)
    model.conv1.unprunable = True
    loaded = round_trip(model)
    assert_identical(model, loaded, example("synthetic").double())
    assert loaded.fc.weight.dtype == torch.float64 and not loaded.fc.weight.requires_grad
    assert loaded.blocks.training and not loaded.training and loaded.conv1.unprunable is True


def test_loading_leaves_the_global_rng_alone():
    """Replaying a stored step must not shift the random numbers of the steps computed after it."""
    data = serialize.dumps(compressed("synthetic", "LMA"))
    serialize._template.cache_clear()  # constructors run again
    before = torch.get_rng_state()
    serialize.loads(data)
    assert torch.equal(torch.get_rng_state(), before)


def test_loads_onto_the_requested_device():
    loaded = serialize.loads(serialize.dumps(pretrained("synthetic")[2]), map_location=torch.device("cpu"))
    assert {p.device.type for p in loaded.state_dict().values()} == {"cpu"}


# ---- the file is data ------------------------------------------------------------------------------

def test_checkpoint_is_a_plain_safetensors_file_without_pickle(tmp_path, monkeypatch):
    model = compressed("synthetic", *GROUPED_LFB)
    path = tmp_path / "model.safetensors"
    size = serialize.save_model(model, path)
    data = path.read_bytes()
    assert size == len(data)
    assert not data.startswith(b"PK\x03\x04")  # torch.save's zip container
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_size])  # the rest of the file is raw tensor bytes, nothing else
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    assert max(ends) == len(data) - 8 - header_size
    assert data[8:9] == b"{"
    description = json.loads(header["__metadata__"][serialize.METADATA_KEY])
    assert description == json.loads(json.dumps(serialize.describe(model)))
    # any safetensors reader sees exactly the state_dict
    stored = safetensors.torch.load_file(path)
    assert sorted(stored) == sorted(model.state_dict())

    def forbidden(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle anything")

    for owner, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(owner, name, forbidden)
    assert_identical(model, serialize.load_model(path), example("synthetic"))


class _Trap:
    """Unpickling this touches a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_trap_is_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Trap(marker)))
    assert marker.exists()  # so the tests below would notice if the loader unpickled


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    for name, write in [("trap.pt", lambda p: torch.save(_Trap(marker), p)),
                        ("trap.safetensors", lambda p: p.write_bytes(pickle.dumps(_Trap(marker))))]:
        write(tmp_path / name)
        with pytest.raises(ValueError, match="not a valid checkpoint|not a safetensors file"):
            serialize.load_model(tmp_path / name)
    assert not marker.exists()


def test_other_files_are_refused(tmp_path):
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(pretrained("synthetic")[2].state_dict(), weights)
    with pytest.raises(SerializationError, match="without an automc module description"):
        serialize.load_model(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(SerializationError, match="not a valid checkpoint"):
        serialize.load_model(garbage)
    for data in (b"", b"short", b"\xff" * 64):
        with pytest.raises(SerializationError):
            serialize.loads(data)
    with pytest.raises(FileNotFoundError):
        serialize.load_model(tmp_path / "missing.safetensors")


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def tampered(model: nn.Module, edit) -> bytes:
    """The checkpoint of ``model`` with its description changed by ``edit(description)`` (tensors kept)."""
    description = json.loads(json.dumps(serialize.describe(model)))
    edit(description)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return safetensors.torch.save(tensors, metadata={"format": serialize.FORMAT,
                                                     serialize.METADATA_KEY: json.dumps(description)})


def _set(path: list, value):
    def edit(description):
        target = description["root"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen",
                                  "posix.system", "torch.nn.Module", "__import__", "pathlib.Path.touch"])
def test_unknown_types_in_a_file_are_refused_and_nothing_runs(tmp_path, monkeypatch, name):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a))
    marker = tmp_path / "ran"
    args = {"$dict": {"command": f"touch {marker}", "source": f"open({str(marker)!r}, 'w')"}}
    for edit in (_set(["children", 0, 1, "type"], name),   # a layer
                 _set(["type"], name)):                       # the root
        data = tampered(small_model(), lambda d: (edit(d), _set(["children", 0, 1, "args"], args)(d)))
        with pytest.raises(ValueError, match=f"{name!r}.*not an allow-listed module type"):
            serialize.loads(data)
    assert not calls and not marker.exists()


@pytest.mark.parametrize("edit, message", [
    (_set(["children", 0, 1, "args", "$dict", "out_channels"], 5), "shape"),            # args disagree with tensors
    (_set(["children", 0, 1, "args", "$dict", "padding_mode"], "exec"), "cannot be built"),
    (_set(["children", 0, 1, "args", "$dict", "weight"], 1), "expected arguments"),
    (_set(["children", 0, 1, "args"], {"$eval": "1"}), "not an encoded value"),
    (_set(["children", 0, 1, "flags"], {"forward": True}), "flags"),
    (_set(["children", 0, 1, "flags"], {"unprunable": "yes"}), "flags"),
    (_set(["children", 0, 1, "extra"], 1), "malformed"),
    (_set(["children", 1, 1], {"ref": "4"}), "reference"),                                 # not built yet
    (_set(["children", 1, 1], {"ref": ""}), "reference"),                                  # the root itself
    (_set(["children", 2, 0], "forward"), "bad child name"),                               # shadows a method
    (_set(["children", 2, 0], "a.b"), "bad child name"),
    (_set(["children", 0, 1, "parameters", 1, 0], "gamma"), "parameters"),
    (_set(["children", 1, 1, "training"], "yes"), "training"),
    (_set(["children", 1, 1, "buffers"], []), "buffers"),
    (_set(["attributes"], {"arch": {}}), "attributes"),
    (lambda d: d.update(format="other/9"), "format"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_tampered_descriptions_raise_clear_errors(edit, message):
    with pytest.raises(SerializationError, match=message):
        serialize.loads(tampered(small_model(), edit))


def test_arguments_cannot_make_loading_allocate_more_than_the_file_holds():
    """Layers are constructed on the meta device; the one CPU-built type has its arguments capped."""
    huge = _set(["children", 0, 1, "args", "$dict", "out_channels"], 1 << 40)  # a 10 PB conv weight
    with pytest.raises(SerializationError, match="shape"):
        serialize.loads(tampered(small_model(), huge))
    many_bins = _set(["children", 0, 1, "args", "$dict", "num_bins"], 1 << 40)
    with pytest.raises(SerializationError, match="outside"):
        serialize.loads(tampered(nn.Sequential(LMAUnit(4)), many_bins))


def test_missing_and_extra_tensors_are_refused():
    model = small_model()
    description = serialize.describe(model)
    metadata = {"format": serialize.FORMAT, serialize.METADATA_KEY: json.dumps(description)}
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "1.running_var"}
    with pytest.raises(SerializationError, match="no tensor '1.running_var'"):
        serialize.loads(safetensors.torch.save(missing, metadata=metadata))
    extra = {**state, "payload": torch.zeros(3)}
    with pytest.raises(SerializationError, match="tensors no module holds"):
        serialize.loads(safetensors.torch.save(extra, metadata=metadata))


# ---- what cannot be stored fails when saving ------------------------------------------------------------

class _Custom(nn.Module):
    def forward(self, x):
        return x


def _hooked() -> nn.Module:
    model = small_model()
    model[2].register_forward_hook(lambda *args: None)
    return model


def _tied() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight
    return model


def _non_persistent() -> nn.Module:
    model = small_model()
    model[2].register_buffer("scratch", torch.zeros(1), persistent=False)
    return model


def _with_attribute(name, value) -> nn.Module:
    model = small_model()
    setattr(model[0], name, value)
    return model


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), "torch.nn.modules.activation.Tanh.*registry"),
    (lambda: nn.Sequential(_Custom()), "_Custom.*registry"),
    (lambda: _with_attribute("foo", 3), "attribute 'foo'"),
    (lambda: _with_attribute("unprunable", 1), "flag 'unprunable'"),
    (lambda: _with_attribute("tucker_core", torch.ones(1)), "tucker_core"),
    (_hooked, "hooks"),
    (_tied, "tied"),
    (_non_persistent, "non-persistent"),
], ids=["unregistered-type", "custom-class", "unknown-attribute", "non-bool-flag", "tensor-flag", "hook", "tied",
        "non-persistent-buffer"])
def test_unstorable_models_fail_at_save_time(tmp_path, make, message):
    path = tmp_path / "model.safetensors"
    with pytest.raises(SerializationError, match=message):
        serialize.save_model(make(), path)
    assert not path.exists()


def test_registry_covers_every_module_type_the_project_produces():
    produced = {type(m) for task_name in ("synthetic", "synthetic-vgg") for method, options in METHODS
                for m in compressed(task_name, method, options).modules()}
    known = {t.cls for t in serialize.registry().values()}
    assert produced <= known
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Sequential,
            nn.PReLU, nn.Embedding, LMAUnit, FilterBasisConv, SharedBasis} <= produced
    x = torch.randn(2, 3, 4, 4)
    for layer in (nn.ReLU6(inplace=True), nn.LeakyReLU(0.3), nn.ELU(0.5), nn.GELU("tanh"), nn.SiLU(),
                  nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Identity(), nn.PReLU(3, init=0.1),
                  nn.AdaptiveAvgPool2d((2, 1)), nn.MaxPool2d(3, 1, 1), nn.Conv2d(3, 2, 3, padding="same")):
        assert_identical(layer, round_trip(layer), x)
    containers = nn.Sequential(nn.ModuleList([nn.ReLU()]), nn.ModuleDict({"layer": nn.Embedding(4, 2, padding_idx=1)}))
    assert_identical(containers, round_trip(containers))
