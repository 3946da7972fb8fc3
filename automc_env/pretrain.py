"""The base model of a task: pre-train it once (E_pre epochs), keep it under AUTOMC_HOME, or load yours.

Pre-training follows the paper code's recipe (methods.md §0.3): SGD, momentum 0.9, weight decay
5e-4, the task's learning rate with x0.1 at 25/50/75 % of the run, augmentation, best val epoch
kept. The file is a plain dict of tensors and numbers (loaded with ``weights_only=True``), named by
task, seed and a digest of the task definition and the code that trains it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

from automc_env.fingerprint import BASE_MODEL_SOURCES, digest, source_digest
from automc_env.home import automc_home
from automc_env.metrics import accuracy, count_flops, count_params
from automc_env.tasks import Task, TaskData
from automc_env.training import train


def pretrained_path(task: Task, seed: int) -> Path:
    key = digest({"task": task.digest(), "seed": seed, "code": source_digest(BASE_MODEL_SOURCES)})[:12]
    return automc_home() / "pretrained" / f"{task.name}-seed{seed}-{key}.pt"


def pretrain(task: Task, data: TaskData, seed: int, device: torch.device, progress: bool = True) -> nn.Module:
    """Train the task's model from scratch for E_pre epochs and save it; returns the model."""
    torch.manual_seed(seed)
    model = task.build_model().to(device)
    generator = torch.Generator().manual_seed(seed)
    result = train(model, data.train, epochs=task.pretrain_epochs, lr=task.lr, batch_size=task.batch_size,
                   generator=generator, momentum=task.momentum, weight_decay=task.weight_decay,
                   augment=task.augment, val=data.val, select_best=True, progress=progress,
                   desc=f"pre-train {task.name} ({task.pretrain_epochs} epochs)")
    path = pretrained_path(task, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "task": task.name, "seed": seed, "val_acc": result.best_acc,
                "seconds": result.seconds, "created": time.time(), "metrics": measure(model, task, data)}, tmp)
    os.replace(tmp, path)
    return model


def load_checkpoint(task: Task, path: str | Path, device: torch.device) -> nn.Module:
    """A user's weights for the task's architecture: a state_dict, or a dict with a 'state_dict' key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (or a dict with 'state_dict'), got {type(blob).__name__}")
    model = task.build_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the {task.model} of task {task.name}: {e}") from e
    return model.to(device)


def base_model(task: Task, data: TaskData, seed: int, device: torch.device, checkpoint: str | Path | None = None,
               progress: bool = True) -> nn.Module:
    """The user's checkpoint if given, else the cached pre-trained model, pre-training it on first use."""
    if checkpoint is not None:
        return load_checkpoint(task, checkpoint, device)
    path = pretrained_path(task, seed)
    if path.exists():
        return load_checkpoint(task, path, device)
    return pretrain(task, data, seed, device, progress)


def measure(model: nn.Module, task: Task, data: TaskData) -> dict:
    """The metrics every state of the environment reports: val accuracy (%), params, FLOPs (MACs)."""
    return {"acc": accuracy(model, data.val.x, data.val.y), "params": count_params(model),
            "flops": count_flops(model, task.input_shape)}


def cached_metrics(task: Task, seed: int) -> dict | None:
    """The base model's metrics saved beside the pre-trained weights (saves re-measuring at start-up)."""
    path = pretrained_path(task, seed)
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob.get("metrics") if isinstance(blob, dict) else None
