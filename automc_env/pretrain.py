"""The base model of a task: shipped with the package, pre-trained once and cached, or yours.

Why pinned base models: every number of the benchmark is relative to a task's base model, so two
machines must start from the same weights. The base models of the CPU tasks (seed 0) therefore ship
inside the package (``automc_env/base_models/<task>-seed<S>.safetensors``), described by
``base_models/manifest.json`` (weights sha256, benchmark version, val/test accuracy, params, FLOPs,
pre-training seconds, torch version and thread count). Any other (task, seed) — the GPU paper tasks,
other seeds, task variants — is pre-trained on first use and cached under ``AUTOMC_HOME/pretrained``
as a safetensors file plus a JSON sidecar with the same record. Nothing here is pickled, so a base
model file can be shared without running code; a user's ``.pt`` checkpoint is read with
``torch.load(weights_only=True)``.

Pre-training follows the paper code's recipe (methods.md §0.3): SGD, momentum 0.9, weight decay
5e-4, the task's learning rate with x0.1 at 25/50/75 % of the run, augmentation, best val epoch
kept. On a CPU it runs on one torch thread (restored afterwards), because the result of a
multi-threaded reduction depends on the thread count: pinned, ``automc pretrain`` regenerates the
shipped weights bit for bit under any ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from automc_env.fingerprint import BASE_MODEL_SOURCES, BENCHMARK_VERSION, digest, source_digest
from automc_env.home import automc_home
from automc_env.metrics import accuracy, count_flops, count_params
from automc_env.tasks import Task, TaskData
from automc_env.training import precision_policy, train

SHIPPED_DIR = Path(__file__).resolve().parent / "base_models"
MANIFEST = SHIPPED_DIR / "manifest.json"

# Task fields that do not influence pre-training: a variant that changes only these (e.g. another γ)
# keeps the shipped / cached base model.
_NOT_PRETRAINING = ("name", "description", "gamma", "finetune_lr", "max_len", "needs_gpu")


# ---- the one weights digest ------------------------------------------------------------------------

def weights_digest(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted state_dict keys and each tensor's raw little-endian bytes.

    The identity of a base model in every fingerprint, manifest and sidecar: it depends only on the
    values, not on the file format, the device or the order a module registers its tensors in.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(_le_bytes(state[key]))
    return h.hexdigest()


def _le_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):  # no numpy dtype: raw bits
        t = t.view({1: torch.uint8, 2: torch.int16}[t.element_size()])
    a = t.numpy()
    if sys.byteorder != "little" and a.dtype.itemsize > 1:
        a = a.byteswap()
    return a.tobytes()


# ---- records: the manifest entry / cache sidecar of one base model ---------------------------------

def pretrain_definition(task: Task) -> dict:
    """The task fields pre-training depends on (data, splits, model, recipe, E_pre), as JSON."""
    d = {k: v for k, v in task.to_json().items() if k not in _NOT_PRETRAINING}
    return json.loads(json.dumps(d, sort_keys=True))  # the form it has after a JSON round trip


def definition_digest(task: Task) -> str:
    """Digest of :func:`pretrain_definition`: part of every cache key."""
    return digest(pretrain_definition(task))


def definition_mismatch(task: Task, recorded: Mapping) -> list[str]:
    """The pre-training fields in which ``task`` differs from a recorded definition (empty: same).

    A field the record lacks matches when the task holds that field's default: fields added to
    ``Task`` later keep the old behaviour at their default, so they must not orphan shipped models.
    """
    current = pretrain_definition(task)
    defaults = {f.name: json.loads(json.dumps(f.default)) for f in fields(Task) if f.default is not MISSING}
    diffs = []
    for key in sorted(set(current) | set(recorded)):
        if key not in recorded:
            if key in defaults and current[key] == defaults[key]:
                continue
            diffs.append(f"{key}={current[key]!r} (not recorded)")
        elif key not in current or current[key] != recorded[key]:
            diffs.append(f"{key}={current.get(key)!r} (recorded {recorded[key]!r})")
    return diffs


def measure(model: nn.Module, task: Task, data: TaskData, test: bool = False) -> dict:
    """The metrics every state of the environment reports: val accuracy (%), params, FLOPs (MACs).

    ``test=True`` adds the held-out test accuracy (``test_acc``), recorded for base models only:
    the search never sees it.
    """
    out = {"acc": accuracy(model, data.val.x, data.val.y), "params": count_params(model),
           "flops": count_flops(model, task.input_shape)}
    if test:
        out["test_acc"] = accuracy(model, data.test.x, data.test.y)
    return out


def record_metrics(record: Mapping, device: torch.device) -> dict | None:
    """The environment's base metrics from a record, if they were measured under ``device``'s policy.

    A record measured on the CPU in fp32 is not reused on a GPU (whose accuracy may differ in the
    last sample); the caller measures instead.
    """
    if record.get("device") != device.type or record.get("precision") != precision_policy(device):
        return None
    return {"acc": float(record["val_acc"]), "params": int(record["params"]), "flops": int(record["flops"])}


@dataclass
class BaseModel:
    """A loaded base model and where it came from.

    ``source`` is "shipped" (package file), "cached" (AUTOMC_HOME), "pretrained" (trained by this
    call) or "checkpoint" (the user's file); ``record`` is the manifest entry or sidecar (None for a
    user checkpoint); ``digest`` is :func:`weights_digest` of the weights.
    """

    model: nn.Module
    digest: str
    source: str
    path: Path | None
    record: dict | None

    def metrics(self, device: torch.device) -> dict | None:
        return record_metrics(self.record, device) if self.record is not None else None


# ---- pre-training ----------------------------------------------------------------------------------

@contextmanager
def pinned_threads(device: torch.device) -> Iterator[int]:
    """One torch thread while pre-training on a CPU (restored afterwards); yields the count used.

    Multi-threaded CPU kernels split reductions by thread count, so the same seed trained with
    OMP_NUM_THREADS=1 and =2 drifts apart in the last bits and then in whole weights. On CUDA the
    thread count does not enter the numbers and is left alone.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu":
        yield previous
        return
    torch.set_num_threads(1)
    try:
        yield 1
    finally:
        torch.set_num_threads(previous)


def train_base(task: Task, data: TaskData, seed: int, device: torch.device,
               progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the task's model from scratch for E_pre epochs; returns (model, record). Writes nothing."""
    device = torch.device(device)
    with pinned_threads(device) as threads:
        torch.manual_seed(seed)
        model = task.build_model().to(device)
        generator = torch.Generator().manual_seed(seed)
        result = train(model, data.train, epochs=task.pretrain_epochs, lr=task.lr, batch_size=task.batch_size,
                       generator=generator, momentum=task.momentum, weight_decay=task.weight_decay,
                       augment=task.augment, val=data.val, select_best=True, progress=progress,
                       desc=f"pre-train {task.name} ({task.pretrain_epochs} epochs)")
        model.eval()
        metrics = measure(model, task, data, test=True)
    record = {
        "task": task.name, "seed": int(seed), "sha256": weights_digest(model),
        "benchmark_version": BENCHMARK_VERSION, "val_acc": metrics["acc"], "test_acc": metrics["test_acc"],
        "params": metrics["params"], "flops": metrics["flops"], "epochs": task.pretrain_epochs,
        "seconds": round(result.seconds, 2), "torch": torch.__version__, "threads": threads,
        "device": device.type, "precision": precision_policy(device),
        "definition": pretrain_definition(task), "code": source_digest(BASE_MODEL_SOURCES),
    }
    return model, record


def pretrained_path(task: Task, seed: int, device: torch.device | str = "cpu") -> Path:
    """The cache file of a (task, seed) pre-trained on ``device``'s type and precision policy.

    The name carries the device type and precision policy (a bf16 GPU model is another model than
    an fp32 CPU one); the key covers the task definition, seed, pre-training code and benchmark version.
    """
    device = torch.device(device)
    policy = precision_policy(device)
    key = digest({"definition": definition_digest(task), "seed": seed, "code": source_digest(BASE_MODEL_SOURCES),
                  "benchmark": BENCHMARK_VERSION, "device": device.type, "precision": policy})[:12]
    return automc_home() / "pretrained" / f"{task.name}-seed{seed}-{device.type}-{policy}-{key}.safetensors"


def sidecar_path(weights: Path) -> Path:
    """The JSON record beside a cached weights file."""
    return weights.with_suffix(".json")


def pretrain(task: Task, data: TaskData, seed: int, device: torch.device, progress: bool = True) -> BaseModel:
    """Pre-train and cache under AUTOMC_HOME (weights, then the sidecar, each written atomically).

    The sidecar is renamed into place last, so its presence marks a complete cache entry.
    """
    device = torch.device(device)
    model, record = train_base(task, data, seed, device, progress)
    path = pretrained_path(task, seed, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path, record)
    _write_json(sidecar_path(path), record)
    return BaseModel(model, record["sha256"], "pretrained", path, record)


# ---- files -----------------------------------------------------------------------------------------

def save_weights(model: nn.Module, path: Path, record: Mapping) -> None:
    """Write a state_dict as safetensors (atomic: temp file + rename), tagged with task, seed, sha256."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {k: str(record[k]) for k in ("task", "seed", "sha256", "benchmark_version") if k in record}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # the writer creates 0600: a shared cache / package file must be readable
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file, or from a .pt file (a state_dict or {'state_dict': ...}).

    ``.pt`` files are read with ``weights_only=True``: tensors and plain containers, no code.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load(path.read_bytes())
        except (safetensors.SafetensorError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for foreign files
        raise ValueError(f"{path} is not a loadable state_dict (.pt read with weights_only=True, or "
                         f".safetensors): {e}") from e
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (or a dict with 'state_dict'), got {type(blob).__name__}")
    return state


def _build(task: Task, state: Mapping[str, torch.Tensor], origin: str | Path, device: torch.device) -> nn.Module:
    model = task.build_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{origin} does not fit the {task.model} of task {task.name}: {e}") from e
    return model.to(device).eval()


def load_checkpoint(task: Task, path: str | Path, device: torch.device) -> nn.Module:
    """A user's weights for the task's architecture (.safetensors, or a .pt state_dict)."""
    return _build(task, read_state(path), path, device)


# ---- the shipped base models -----------------------------------------------------------------------

def read_manifest() -> dict:
    """The package's manifest ({"benchmark_version", "models": {file name: record}}), empty if absent."""
    if not MANIFEST.exists():
        return {"benchmark_version": BENCHMARK_VERSION, "models": {}}
    return json.loads(MANIFEST.read_text())


def shipped_name(task: Task, seed: int) -> str:
    return f"{task.name}-seed{seed}.safetensors"


def shipped_record(task: Task, seed: int, warn: bool = True) -> dict | None:
    """The manifest entry of (task, seed) if one ships and was made for this task definition.

    A variant of a shipped task that changes what pre-training does (e.g. fewer epochs) must not
    get the shipped weights: it is pre-trained locally, with a warning that says so.
    """
    entry = read_manifest().get("models", {}).get(shipped_name(task, seed))
    if entry is None:
        return None
    diffs = definition_mismatch(task, entry.get("definition", {}))
    if diffs:
        if warn:
            warnings.warn(f"the shipped base model of {task.name} seed {seed} was made for another task "
                          f"definition ({'; '.join(diffs)}); pre-training this variant locally", stacklevel=3)
        return None
    return entry


def write_shipped(model: nn.Module, record: dict) -> Path:
    """Maintainers only: write a base model into the package and record it in the manifest."""
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    name = f"{record['task']}-seed{record['seed']}.safetensors"
    path = SHIPPED_DIR / name
    save_weights(model, path, record)
    manifest = read_manifest()
    manifest["benchmark_version"] = BENCHMARK_VERSION
    manifest.setdefault("models", {})[name] = dict(record)
    manifest["models"] = dict(sorted(manifest["models"].items()))
    _write_json(MANIFEST, manifest)
    return path


def _load_recorded(task: Task, path: Path, record: Mapping, device: torch.device) -> nn.Module | None:
    """Load weights whose record names their sha256; None when the file does not match it."""
    state = read_state(path)
    if weights_digest(state) != record.get("sha256"):
        return None
    return _build(task, state, path, device)


def compare(record: Mapping, reference: Mapping) -> list[str]:
    """What differs between a regenerated base model and the shipped one (empty: identical weights)."""
    if record["sha256"] == reference.get("sha256"):
        return []
    diffs = [f"sha256 {record['sha256']} != shipped {reference.get('sha256')}"]
    for key, unit in (("val_acc", " %"), ("test_acc", " %"), ("params", ""), ("flops", " MACs")):
        if record.get(key) != reference.get(key):
            diffs.append(f"{key} {record.get(key)}{unit} != shipped {reference.get(key)}{unit}")
    for key, why in (("code", "pre-training code changed since the shipped file was made"),
                     ("torch", "torch version"), ("threads", "thread count"), ("device", "device"),
                     ("precision", "precision policy")):
        if record.get(key) != reference.get(key):
            diffs.append(f"{why}: {record.get(key)} vs shipped {reference.get(key)}")
    return diffs


# ---- what the environment calls ---------------------------------------------------------------------

def load_base(task: Task, data: TaskData, seed: int, device: torch.device, checkpoint: str | Path | None = None,
              progress: bool = True) -> BaseModel:
    """The user's checkpoint if given, else the shipped model, else the cached one, else pre-train.

    A shipped file that does not match its manifest hash is an error (a broken install); a cached
    file that does not match its sidecar is stale and is pre-trained again.
    """
    device = torch.device(device)
    if checkpoint is not None:
        model = load_checkpoint(task, checkpoint, device)
        return BaseModel(model, weights_digest(model), "checkpoint", Path(checkpoint), None)
    entry = shipped_record(task, seed)
    if entry is not None:
        path = SHIPPED_DIR / shipped_name(task, seed)
        model = _load_recorded(task, path, entry, device)
        if model is None:
            raise RuntimeError(f"{path} does not match the sha256 in {MANIFEST}: the installation is damaged "
                               f"(reinstall, or regenerate it with `automc pretrain --task {task.name} "
                               f"--seed {seed} --write-shipped`)")
        return BaseModel(model, entry["sha256"], "shipped", path, dict(entry))
    return load_cached(task, seed, device) or pretrain(task, data, seed, device, progress)


def load_cached(task: Task, seed: int, device: torch.device) -> BaseModel | None:
    """The cached pre-trained model of (task, seed, device type, precision), if complete and intact."""
    path = pretrained_path(task, seed, device)
    side = sidecar_path(path)
    if not (path.exists() and side.exists()):
        return None
    try:
        record = json.loads(side.read_text())
        model = _load_recorded(task, path, record, device)
    except (ValueError, KeyError) as e:
        warnings.warn(f"cached base model {path} is unreadable ({e}); pre-training again", stacklevel=3)
        return None
    if model is None:
        warnings.warn(f"cached base model {path} does not match its sidecar's sha256; pre-training again",
                      stacklevel=3)
        return None
    return BaseModel(model, record["sha256"], "cached", path, record)


def base_model(task: Task, data: TaskData, seed: int, device: torch.device, checkpoint: str | Path | None = None,
               progress: bool = True) -> nn.Module:
    """Just the module of :func:`load_base`, for callers that need no digest or record."""
    return load_base(task, data, seed, device, checkpoint, progress).model
