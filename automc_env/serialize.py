"""Pickle-free model checkpoints: a JSON description of the module tree plus its tensors, in one
safetensors file.

Why: ``torch.save(model)`` pickles the model, and unpickling runs whatever code the file names, so a
checkpoint written by someone else is a program. A compressed model here is one safetensors file:

* its tensors are the model's full ``state_dict`` (parameters and buffers: BN and LMA running
  statistics, ``num_batches_tracked``...), one entry per tensor, keyed like the state_dict (a module
  shared at several places is stored once, under its first path);
* its string metadata holds the module tree as JSON (``METADATA_KEY``): per module its registered
  type, the constructor arguments (standard layers, LMA units) or the plain attributes (containers:
  ``arch`` of the automc models, ``groups`` of a shared filter basis), the marker flags compressors
  read (``FLAGS``: ``unprunable``, ``tucker_core``), its ``training`` flag, every parameter's
  ``requires_grad`` (LFB's frozen PReLU guard), the names of its parameters and buffers (``None``
  ones included) and its children in order; a module seen before is a reference to its first path.

Loading parses JSON and raw tensors only. Module types come from an allow-list (:func:`registry`);
each module is created empty and given exactly the state its registered constructor produces for
the recorded arguments (JSON values: str, int, float, bool, None, tagged tuples and dicts; the
constructor runs once per distinct argument set with weight initialisation skipped, on the meta
device — LMA units: on the CPU with capped arguments —, so it allocates nothing the arguments could
inflate and never draws from the global RNG) or, for containers, its recorded attributes; then the
file's tensors are put in place, checked against the shapes the arguments imply. Nothing named by
the file is imported or called, so a checkpoint can be shared and copied between machines like any
data file.

Exactness is checked when saving, not hoped for when loading: :func:`save_model` rebuilds the model
from the description it is about to write and compares it with the original, module by module
(class, every plain attribute in ``__dict__``, training flag, parameter / buffer names, shapes and
dtypes, ``requires_grad``, children, sharing). A type outside the registry, an attribute the format
does not know, a hook or a tied tensor raises :class:`SerializationError` there, naming the module,
so a new layer type fails in the tests that save it instead of when someone loads a store.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import safetensors
import safetensors.torch
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["FLAGS", "FORMAT", "METADATA_KEY", "SerializationError", "describe", "dumps", "load_model",
           "loads", "registry", "save_model"]

FORMAT = "automc-module-tree/1"
METADATA_KEY = "automc.module_tree"   # the JSON description; "format" holds FORMAT

# Marker attributes compressors set on instances and read back with getattr (pruning.channel_groups,
# hos.decomposable_convs / is_tucker_core, lfb.find_sites): recorded wherever they are set.
FLAGS: dict[str, type] = {"unprunable": bool, "tucker_core": bool}

_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # _parameters, _modules, hook dicts, training, ...
_NODE_KEYS = frozenset({"type", "args", "attributes", "flags", "training", "parameters", "buffers", "children"})


class SerializationError(ValueError):
    """A model cannot be written in this format, or a file is not a valid checkpoint of it."""


# ---- the allow-list ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModuleType:
    """How one module class is written and rebuilt.

    ``args`` set: the module is rebuilt by ``cls(**{name: value})`` with the values of these
    attributes (``bias`` stands for ``module.bias is not None``, the constructor's flag); the
    constructor validates them and creates the parameters and buffers the file must then fill.
    ``args`` None: a container rebuilt as an empty ``nn.Module`` of ``cls`` (its ``__init__`` builds
    children from arguments it does not keep, e.g. a ``PreActBlock``'s widths, or from an ``arch``
    that pruning has since made stale) with ``attributes`` restored and the recorded children
    added; it may not own tensors itself.

    Constructors run on the meta device (no memory, whatever the arguments claim). ``cpu_limit``
    set: on the CPU instead, with every int argument at most that, for a constructor whose meta
    kernels are Python reference code (LMAUnit's arange / compare import sympy and torch._refs on
    first use: ~1.5 s per process) and whose allocations are linear in its arguments.
    """

    name: str
    cls: type[nn.Module]
    args: tuple[str, ...] | None = None
    attributes: tuple[str, ...] = ()
    cpu_limit: int | None = None

    def arguments(self, module: nn.Module) -> dict[str, Any]:
        return {n: (module.bias is not None if n == "bias" else getattr(module, n)) for n in self.args or ()}


@functools.lru_cache(maxsize=None)
def registry() -> Mapping[str, ModuleType]:
    """Every module type a checkpoint may contain, by the name written to the file.

    Built on first use: the automc layer classes live in ``compressors``, which imports
    ``automc_env`` modules itself.
    """
    from automc_env.models import VGG, CifarResNet, PreActBlock
    from compressors.lfb import FilterBasisConv, SharedBasis
    from compressors.lma import LMAUnit

    types = [
        ModuleType("torch.nn.Conv2d", nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                                  "dilation", "groups", "bias", "padding_mode")),
        ModuleType("torch.nn.Linear", nn.Linear, ("in_features", "out_features", "bias")),
        ModuleType("torch.nn.BatchNorm2d", nn.BatchNorm2d,
                   ("num_features", "eps", "momentum", "affine", "track_running_stats")),
        ModuleType("torch.nn.ReLU", nn.ReLU, ("inplace",)),
        ModuleType("torch.nn.ReLU6", nn.ReLU6, ("inplace",)),
        ModuleType("torch.nn.LeakyReLU", nn.LeakyReLU, ("negative_slope", "inplace")),
        ModuleType("torch.nn.ELU", nn.ELU, ("alpha", "inplace")),
        ModuleType("torch.nn.GELU", nn.GELU, ("approximate",)),
        ModuleType("torch.nn.SiLU", nn.SiLU, ("inplace",)),
        ModuleType("torch.nn.PReLU", nn.PReLU, ("num_parameters", "init")),
        ModuleType("torch.nn.MaxPool2d", nn.MaxPool2d,
                   ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")),
        ModuleType("torch.nn.AvgPool2d", nn.AvgPool2d,
                   ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")),
        ModuleType("torch.nn.AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d, ("output_size",)),
        ModuleType("torch.nn.Flatten", nn.Flatten, ("start_dim", "end_dim")),
        ModuleType("torch.nn.Identity", nn.Identity, ()),
        ModuleType("torch.nn.Embedding", nn.Embedding,
                   ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                    "scale_grad_by_freq", "sparse")),
        ModuleType("torch.nn.Sequential", nn.Sequential),
        ModuleType("torch.nn.ModuleList", nn.ModuleList),
        ModuleType("torch.nn.ModuleDict", nn.ModuleDict),
        ModuleType("automc_env.models.CifarResNet", CifarResNet, attributes=("arch",)),
        ModuleType("automc_env.models.PreActBlock", PreActBlock),
        ModuleType("automc_env.models.VGG", VGG, attributes=("arch",)),
        ModuleType("compressors.lma.LMAUnit", LMAUnit, ("num_bins", "momentum", "debias"), cpu_limit=1 << 16),
        ModuleType("compressors.lfb.FilterBasisConv", FilterBasisConv),
        ModuleType("compressors.lfb.SharedBasis", SharedBasis, attributes=("groups",)),
    ]
    return {t.name: t for t in types}


@functools.lru_cache(maxsize=None)
def _by_class() -> Mapping[type, ModuleType]:
    return {t.cls: t for t in registry().values()}


# ---- JSON values: exact for the types module attributes use ------------------------------------------

def _encode(value: Any, where: str) -> Any:
    """A JSON value that decodes to exactly ``value`` (tuples and non-finite floats are tagged)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if type(value) is tuple:
        return {"$tuple": [_encode(v, where) for v in value]}
    if type(value) is list:
        return [_encode(v, where) for v in value]
    if type(value) is dict and all(isinstance(k, str) for k in value):
        return {"$dict": {k: _encode(v, where) for k, v in value.items()}}
    raise SerializationError(f"{where} is a {type(value).__module__}.{type(value).__qualname__} ({value!r}); "
                             f"checkpoints hold only None, bool, int, float, str, tuple, list and str-keyed dict")


def _decode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$tuple" and isinstance(inner, list):
            return tuple(_decode(v, where) for v in inner)
        if tag == "$dict" and isinstance(inner, dict):
            return {k: _decode(v, where) for k, v in inner.items()}
        if tag == "$float" and inner in ("inf", "-inf", "nan"):
            return float(inner)
    raise SerializationError(f"{where}: {value!r} is not an encoded value")


# ---- writing -----------------------------------------------------------------------------------------

def _label(path: str) -> str:
    return f"module {path!r}" if path else "the root module"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _plain_state(module: nn.Module) -> dict[str, Any]:
    """Everything in the instance ``__dict__`` that ``nn.Module`` does not manage itself."""
    return {k: v for k, v in vars(module).items() if k not in _MODULE_INTERNALS}


def _walk(model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON description, tensors to store by state_dict key) of ``model``; refuses what cannot be exact."""
    if not isinstance(model, nn.Module):
        raise SerializationError(f"expected a torch.nn.Module, got {type(model).__name__}")
    by_class = _by_class()
    first_path: dict[int, str] = {}
    tensor_keys: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}

    def node(module: nn.Module, path: str) -> dict:
        if id(module) in first_path:
            return {"ref": first_path[id(module)]}
        first_path[id(module)] = path
        cls = type(module)
        spec = by_class.get(cls)
        if spec is None:
            raise SerializationError(
                f"{_label(path)} is a {cls.__module__}.{cls.__qualname__}, which checkpoints cannot store: "
                f"add it to automc_env.serialize.registry() (known: {', '.join(sorted(registry()))})")
        for key in _MODULE_INTERNALS:
            if "hooks" in key and getattr(module, key, None):
                raise SerializationError(f"{_label(path)} ({spec.name}) has {key} registered; hooks are code "
                                         f"and cannot be stored")
        if module._non_persistent_buffers_set:
            raise SerializationError(f"{_label(path)} ({spec.name}) has non-persistent buffers "
                                     f"{sorted(module._non_persistent_buffers_set)}, which checkpoints do not store")
        out: dict[str, Any] = {"type": spec.name}
        if spec.args is not None:
            out["args"] = _encode(spec.arguments(module), f"an argument of {_label(path)} ({spec.name})")
        else:
            if module._parameters or module._buffers:
                raise SerializationError(f"{_label(path)} ({spec.name}) owns tensors directly, which a "
                                         f"container type cannot restore")
            out["attributes"] = {a: _encode(getattr(module, a), f"attribute {a!r} of {_label(path)}")
                                 for a in spec.attributes}
        flags = {}
        for flag, kind in FLAGS.items():
            if flag in vars(module):
                value = vars(module)[flag]
                if type(value) is not kind:
                    raise SerializationError(f"flag {flag!r} of {_label(path)} is {value!r}, not a {kind.__name__}")
                flags[flag] = value
        out["flags"] = flags
        out["training"] = bool(module.training)
        out["parameters"] = []
        for name, p in module._parameters.items():
            if p is not None and type(p) is not nn.Parameter:
                raise SerializationError(f"parameter {_join(path, name)!r} is a {type(p).__name__}, "
                                         f"not a plain nn.Parameter")
            out["parameters"].append([name, None if p is None else bool(p.requires_grad)])
            if p is not None:
                store(p, _join(path, name))
        out["buffers"] = []
        for name, b in module._buffers.items():
            if b is not None and type(b) is not torch.Tensor:
                raise SerializationError(f"buffer {_join(path, name)!r} is a {type(b).__name__}, not a plain tensor")
            out["buffers"].append([name, b is not None])
            if b is not None:
                store(b, _join(path, name))
        out["children"] = [[name, None if child is None else node(child, _join(path, name))]
                           for name, child in module._modules.items()]
        return out

    def store(tensor: torch.Tensor, key: str) -> None:
        if id(tensor) in tensor_keys:
            raise SerializationError(f"tensor {key!r} is also {tensor_keys[id(tensor)]!r} (tied across modules); "
                                     f"checkpoints store each tensor under one module")
        tensor_keys[id(tensor)] = key
        tensors[key] = tensor.detach().to("cpu").contiguous()

    root = node(model, "")
    return {"format": FORMAT, "torch": torch.__version__, "root": root}, tensors


def describe(model: nn.Module) -> dict:
    """The JSON-serialisable description of ``model``'s module tree (what the file's metadata holds)."""
    return _walk(model)[0]


def dumps(model: nn.Module) -> bytes:
    """The checkpoint of ``model`` as bytes (see :func:`save_model`)."""
    description, tensors = _walk(model)
    _verify(model, _build(description, dict(tensors)))  # the loader's own path, on the tensors themselves
    text = json.dumps(description, allow_nan=False, separators=(",", ":"))
    # Tensors that share storage (views of one another) are stored as separate copies: safetensors
    # refuses shared memory, and a module's tensors are independent after loading anyway.
    seen: set[tuple[int, int]] = set()
    for key, t in tensors.items():
        if t.numel():
            ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if ident in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                tensors[key] = t.clone()
            seen.add(ident)
    return safetensors.torch.save(tensors, metadata={"format": FORMAT, METADATA_KEY: text})


def save_model(model: nn.Module, path: str | os.PathLike | IO[bytes]) -> int:
    """Write ``model`` as one safetensors file (a path, or a binary file object); returns the bytes written.

    Raises :class:`SerializationError` before writing anything if the model holds a module type
    outside :func:`registry`, an attribute the format does not record, a hook or a tied tensor.
    """
    data = dumps(model)
    if isinstance(path, (str, os.PathLike)):
        Path(path).write_bytes(data)
    else:
        path.write(data)
    return len(data)


def _verify(model: nn.Module, rebuilt_model: nn.Module) -> None:
    """The model rebuilt from its description equals ``model`` in structure, attributes and flags."""
    pairs: dict[int, nn.Module] = {}

    def compare(original: nn.Module, rebuilt: nn.Module, path: str) -> None:
        where = f"{_label(path)} ({type(original).__qualname__})"
        if id(original) in pairs:
            if pairs[id(original)] is not rebuilt:
                raise SerializationError(f"{where}: its sharing is not reproduced")
            return
        pairs[id(original)] = rebuilt
        if type(rebuilt) is not type(original) or rebuilt.training != original.training:
            raise SerializationError(f"{where}: rebuilt as {type(rebuilt).__qualname__}, training={rebuilt.training}")
        mine, theirs = _plain_state(original), _plain_state(rebuilt)
        for attr in sorted(set(mine) | set(theirs)):
            if attr not in theirs:
                raise SerializationError(
                    f"{where} has attribute {attr!r} = {mine[attr]!r}, which checkpoints do not record; teach "
                    f"automc_env.serialize about it (FLAGS for markers, registry() for constructor state)")
            if attr not in mine or not _same(mine[attr], theirs[attr]):
                raise SerializationError(f"{where}: attribute {attr!r} is {mine.get(attr)!r} but a module rebuilt "
                                         f"from its recorded arguments has {theirs[attr]!r}")
        for kind in ("_parameters", "_buffers"):
            ours, built = getattr(original, kind), getattr(rebuilt, kind)
            if list(ours) != list(built):
                raise SerializationError(f"{where}: {kind[1:]} {list(ours)} rebuilt as {list(built)}")
            for name, t in ours.items():
                r = built[name]
                if (t is None) != (r is None) or (t is not None and (t.shape, t.dtype) != (r.shape, r.dtype)):
                    raise SerializationError(f"{where}: {name} is {None if t is None else (t.shape, t.dtype)}, "
                                             f"rebuilt as {None if r is None else (r.shape, r.dtype)}")
                if kind == "_parameters" and t is not None and t.requires_grad != r.requires_grad:
                    raise SerializationError(f"{where}: requires_grad of {name} is not reproduced")
        if list(original._modules) != list(rebuilt._modules):
            raise SerializationError(f"{where}: children {list(original._modules)} rebuilt as {list(rebuilt._modules)}")
        for name, child in original._modules.items():
            other = rebuilt._modules[name]
            if (child is None) != (other is None):
                raise SerializationError(f"{where}: child {name!r} is not reproduced")
            if child is not None:
                compare(child, other, _join(path, name))

    compare(model, rebuilt_model, "")


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types, recursively (1 vs 1.0 vs True and tuple vs list differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


# ---- reading -----------------------------------------------------------------------------------------

def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SerializationError(message)


def _names(entries: Any, where: str, what: str) -> list[tuple[str, Any]]:
    _require(isinstance(entries, list) and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                               for e in entries), f"{where}: malformed {what} list")
    names = [e[0] for e in entries]
    _require(len(set(names)) == len(names), f"{where}: duplicate {what} names")
    return [(e[0], e[1]) for e in entries]


@dataclass(frozen=True)
class _Template:
    """What a registered constructor makes of one set of arguments (tensors as shapes only)."""

    state: dict[str, Any]                                  # plain __dict__ attributes it sets
    parameters: tuple[tuple[str, tuple[int, ...] | None], ...]
    buffers: tuple[tuple[str, tuple[int, ...] | None], ...]
    children: tuple[str, ...]


class _SkipInit(TorchFunctionMode):
    """Constructors run only for their attributes and shapes here: weight initialisation is skipped.

    On the meta device the values are meaningless anyway, and meta random fills go through torch's
    Python reference kernels (the first one imports and compiles them: about a second).
    """

    _SKIPPED = frozenset({torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.fill_, torch.Tensor.zero_,
                          nn.init.uniform_, nn.init.normal_, nn.init.constant_, nn.init.kaiming_uniform_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._SKIPPED:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=4096)
def _template(name: str, args_json: str) -> _Template:
    """Run the constructor of ``name`` once per distinct argument set, on the meta device.

    Meta tensors cost no memory, so arguments from a file cannot make loading allocate more than
    the file's own tensors; caching keeps the per-module cost at a dict copy (constructing layers
    initialises their weights and is ~10x slower than unpickling them).
    """
    spec = registry()[name]
    args = _decode(json.loads(args_json), f"{name} arguments")
    try:
        if spec.cpu_limit is None:
            with torch.device("meta"), _SkipInit():
                module = spec.cls(**args)
        else:
            too_big = {k: v for k, v in args.items() if type(v) is int and not 0 <= v <= spec.cpu_limit}
            _require(not too_big, f"{name} arguments {too_big} are outside [0, {spec.cpu_limit}]")
            with _SkipInit():
                module = spec.cls(**args)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"{name} cannot be built from {args!r}: {exc}") from exc
    fresh = vars(nn.Module())
    for key in _MODULE_INTERNALS - {"training", "_parameters", "_buffers", "_modules"}:
        if vars(module).get(key) != fresh[key]:  # hooks or non-persistent buffers set by the constructor
            raise SerializationError(f"{name}'s constructor sets {key}, which checkpoints cannot restore")
    return _Template(_plain_state(module),
                     tuple((n, None if p is None else tuple(p.shape)) for n, p in module._parameters.items()),
                     tuple((n, None if b is None else tuple(b.shape)) for n, b in module._buffers.items()),
                     tuple(module._modules))


def _build(description: Any, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The module tree of ``description`` with ``tensors`` (consumed) in place.

    Every module is created empty (``cls.__new__`` + ``nn.Module.__init__``) and given exactly the
    state its registered constructor produces for the recorded arguments (:func:`_template`) or,
    for containers, the recorded attributes; then flags, training flag, tensors and children.
    """
    _require(isinstance(description, dict) and description.get("format") == FORMAT and "root" in description,
             f"the module description is not in format {FORMAT!r}")
    types = registry()
    done: dict[str, nn.Module] = {}

    def build(node: Any, path: str) -> nn.Module:
        where = _label(path)
        _require(isinstance(node, dict), f"{where}: malformed description")
        if "ref" in node:
            _require(set(node) == {"ref"} and isinstance(node["ref"], str) and node["ref"] in done,
                     f"{where}: reference {node.get('ref')!r} does not name a module described before it")
            return done[node["ref"]]
        _require(set(node) <= _NODE_KEYS and {"type", "flags", "training", "parameters", "buffers",
                                              "children"} <= set(node), f"{where}: malformed description")
        name = node["type"]
        spec = types.get(name) if isinstance(name, str) else None
        if spec is None:
            raise SerializationError(f"{where} has type {name!r}, which is not an allow-listed module type; "
                                     f"a checkpoint may only contain {', '.join(sorted(types))}")
        where = f"{where} ({name})"
        module = spec.cls.__new__(spec.cls)
        nn.Module.__init__(module)
        if spec.args is not None:
            _require("attributes" not in node, f"{where}: malformed description")
            args = _decode(node.get("args"), f"{where} arguments")
            _require(isinstance(args, dict) and list(args) == list(spec.args),
                     f"{where}: expected arguments {list(spec.args)}")
            template = _template(name, json.dumps(node["args"], allow_nan=False))
            vars(module).update(copy.deepcopy(template.state))
            slots = {"parameters": template.parameters, "buffers": template.buffers}
            child_names: tuple[str, ...] | None = template.children
        else:
            attributes = node.get("attributes")
            _require("args" not in node and isinstance(attributes, dict) and set(attributes) == set(spec.attributes),
                     f"{where}: expected attributes {list(spec.attributes)}")
            for attr in spec.attributes:
                object.__setattr__(module, attr, _decode(attributes[attr], f"{where} attribute {attr!r}"))
            slots = {"parameters": (), "buffers": ()}
            child_names = None  # any
        flags = node["flags"]
        _require(isinstance(flags, dict) and all(k in FLAGS and type(v) is FLAGS[k] for k, v in flags.items()),
                 f"{where}: unknown or malformed flags {flags!r}")
        for flag, value in flags.items():
            object.__setattr__(module, flag, value)
        _require(isinstance(node["training"], bool), f"{where}: malformed training flag")
        module.training = node["training"]

        for kind, expected in slots.items():
            entries = _names(node[kind], where, kind)
            _require([n for n, _ in entries] == [n for n, _ in expected],
                     f"{where}: {kind} {[n for n, _ in entries]} but the type has {[n for n, _ in expected]}")
            target = module._parameters if kind == "parameters" else module._buffers
            for (tname, state), (_, shape) in zip(entries, expected):
                if kind == "parameters":  # requires_grad, or None for a parameter registered as None
                    _require(state is None or isinstance(state, bool), f"{where}: malformed parameter {tname!r}")
                    present = state is not None
                else:  # stored, or None
                    _require(isinstance(state, bool), f"{where}: malformed buffer {tname!r}")
                    present = state
                _require(present == (shape is not None),
                         f"{where}: {tname} is {'present' if present else 'None'} against its arguments")
                if not present:
                    target[tname] = None
                    continue
                key = _join(path, tname)
                _require(key in tensors, f"the checkpoint has no tensor {key!r}")
                value = tensors.pop(key)
                _require(tuple(value.shape) == shape,
                         f"tensor {key!r} has shape {tuple(value.shape)}, but {where} needs {shape}")
                if kind == "parameters":
                    try:
                        target[tname] = nn.Parameter(value, requires_grad=state)
                    except RuntimeError as exc:  # e.g. requires_grad on an integer tensor
                        raise SerializationError(f"parameter {key!r}: {exc}") from exc
                else:
                    target[tname] = value

        children = _names(node["children"], where, "child")
        if child_names is not None:
            _require(tuple(n for n, _ in children) == child_names,
                     f"{where}: children {[n for n, _ in children]} but the type has {list(child_names)}")
        for cname, child in children:
            built = None if child is None else build(child, _join(path, cname))
            try:
                module.add_module(cname, built)  # rejects "", dotted names and names of attributes
            except (KeyError, TypeError) as exc:
                raise SerializationError(f"{where}: bad child name {cname!r}: {exc}") from exc
        done[path] = module
        return module

    return build(description["root"], "")


def _read(data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """(description, tensors) of checkpoint bytes; SerializationError if they are not one."""
    try:
        size = int.from_bytes(data[:8], "little")
        _require(len(data) >= 8 and 2 <= size <= len(data) - 8, "not a safetensors file")
        header = json.loads(data[8:8 + size])
        _require(isinstance(header, dict), "not a safetensors file")
        metadata = header.get("__metadata__") or {}
        _require(isinstance(metadata, dict) and metadata.get("format") == FORMAT and METADATA_KEY in metadata,
                 f"a safetensors file without an automc module description (format {FORMAT!r}); "
                 f"plain weight files are loaded with load_state_dict into a model you build")
        description = json.loads(metadata[METADATA_KEY], parse_constant=_reject_constant)
        tensors = safetensors.torch.load(data)
    except SerializationError:
        raise
    except (ValueError, RecursionError, safetensors.SafetensorError) as exc:  # JSONDecodeError is a ValueError
        raise SerializationError(f"not a valid checkpoint: {exc}") from exc
    return description, tensors


def _reject_constant(name: str) -> None:
    raise SerializationError(f"non-standard JSON constant {name} in the module description")


def loads(data: bytes, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of checkpoint bytes (see :func:`load_model`)."""
    description, tensors = _read(bytes(data))
    try:
        model = _build(description, tensors)
    except SerializationError:
        raise
    except RecursionError as exc:
        raise SerializationError(f"the module description is nested too deeply: {exc}") from exc
    if tensors:
        raise SerializationError(f"the checkpoint has tensors no module holds: {sorted(tensors)[:5]}")
    if not _is_cpu(map_location):
        model.to(map_location)  # a device problem propagates as it is: the file is fine
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`save_model`; executes no code named by the file.

    Raises FileNotFoundError for a missing file and :class:`SerializationError` (a ValueError) for
    anything that is not a valid checkpoint: another format (a pickle, a plain weights file), a
    type outside :func:`registry`, malformed or inconsistent metadata, missing or extra tensors.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return loads(data, map_location)


def _is_cpu(map_location: str | torch.device) -> bool:
    try:
        return torch.device(map_location).type == "cpu"
    except (TypeError, RuntimeError):
        return False

