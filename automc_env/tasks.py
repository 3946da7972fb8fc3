"""Task registry: data set + base model + γ + training recipe + search split.

A task's ``pretrain_epochs`` (E_pre) is the unit of every "epochs" hyperparameter (``*0.3`` means
``int(0.3·E_pre)`` epochs). Each task exposes three splits:

* ``train``: what compressors train and fine-tune on (the paper's 10 % per-class "mini" train split
  for the search tasks);
* ``val``: what every step's accuracy is measured on and checkpoints are selected on: the paper's
  mini test split on the search tasks; the **whole** official test split on the full-data paper
  tasks, as in the paper (``val_fraction = 1``); half of the test portion on the small CPU tasks;
* ``test``: held out from the search (the rest of the test split), for the final report. The
  full-data paper tasks have no held-out split: like the paper, they report on the split they
  select on, so ``test`` is ``val`` there.

Paper tasks (GPU work) and small CPU tasks live side by side; ``digits`` is the default.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from automc_env import data as D
from automc_env.models import build_model, model_arch


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str              # cifar10 | cifar100 | digits | synthetic
    model: str                # see automc_env.models.model_arch
    gamma: float              # target parameter-reduction rate γ
    pretrain_epochs: int      # E_pre: the unit of every epochs hyperparameter
    batch_size: int
    lr: float                 # pre-training learning rate (SGD, momentum, MultiStepLR at 25/50/75 %)
    finetune_lr: float        # default learning rate of the methods' fine-tuning stages
    search_fraction: float    # per-class fraction of train / test used by the search (paper: 0.1)
    description: str
    max_len: int = 5          # L: maximum scheme length
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: D.Augment = field(default_factory=D.Augment)
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    needs_gpu: bool = False   # paper-scale: hours per step on a CPU
    data_options: tuple[tuple[str, object], ...] = ()
    val_fraction: float = 0.5  # search_fraction 1: per-class share of the test split used as val (1 = all)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def arch(self) -> dict:
        return model_arch(self.model, self.num_classes, self.in_channels, self.image_size)

    def build_model(self) -> nn.Module:
        return build_model(self.arch())

    def to_json(self) -> dict:
        d = asdict(self)
        d["augment"] = asdict(self.augment)
        d["data_options"] = dict(self.data_options)
        return d

    def digest(self) -> str:
        """Hash of the whole task definition: part of every cache key."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def load_data(self, device: torch.device | str = "cpu", seed: int = 0,
                  download: bool = False) -> TaskData:
        """The train / val / test splits on ``device`` (search sampling seeded by ``seed``)."""
        raw = _raw_splits(self, download)
        if self.search_fraction < 1.0:
            tr = D.stratified_sample(raw.train_y, self.search_fraction, seed)
            va = D.stratified_sample(raw.test_y, self.search_fraction, seed + 1)
        else:  # all of train; val_fraction of test for validation, the rest held out
            tr = np.arange(len(raw.train_y))
            va = (np.arange(len(raw.test_y)) if self.val_fraction >= 1.0
                  else D.stratified_sample(raw.test_y, self.val_fraction, seed + 1))
        te = np.setdiff1d(np.arange(len(raw.test_y)), va)
        if len(te) == 0:  # full-data paper tasks: the paper validates on the official test split
            te = va

        def split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> D.DeviceData:
            return D.to_device(x[idx], y[idx], raw.mean, raw.std, device)

        return TaskData(split(raw.train_x, raw.train_y, tr), split(raw.test_x, raw.test_y, va),
                        split(raw.test_x, raw.test_y, te))


@dataclass
class TaskData:
    train: D.DeviceData
    val: D.DeviceData
    test: D.DeviceData


def _raw_splits(task: Task, download: bool) -> D.RawSplits:
    opts = dict(task.data_options)
    if task.dataset in D.CIFAR:
        return D.load_cifar(task.dataset, download=download)
    if task.dataset == "digits":
        return D.load_digits_splits(**opts)
    if task.dataset == "synthetic":
        return D.make_synthetic_splits(num_classes=task.num_classes, size=task.image_size,
                                       channels=task.in_channels, **opts)
    raise ValueError(f"task {task.name}: unknown dataset {task.dataset!r}")


CIFAR_AUG = D.Augment(pad=4, flip=True)
_PAPER = dict(lr=0.01, finetune_lr=1e-3, gamma=0.3, augment=CIFAR_AUG, needs_gpu=True)


def _paper(name: str, dataset: str, model: str, mini: bool, note: str) -> Task:
    classes = D.CIFAR[dataset]["classes"]
    return Task(name=name, dataset=dataset, model=model, num_classes=classes,
                pretrain_epochs=50 if mini else 200, batch_size=64 if mini else 128,
                search_fraction=0.1 if mini else 1.0, val_fraction=1.0, description=note, **_PAPER)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


for _t in [
    _paper("resnet56-cifar10-mini", "cifar10", "resnet56", True,
           "Exp1 search task: ResNet-56 on the 10 % per-class mini CIFAR-10, E_pre 50"),
    _paper("resnet56-cifar10", "cifar10", "resnet56", False, "Exp1 final evaluation: full CIFAR-10, E_pre 200"),
    _paper("vgg16-cifar100-mini", "cifar100", "vgg16", True,
           "Exp2 search task: VGG-16-BN on the 10 % per-class mini CIFAR-100, E_pre 50"),
    _paper("vgg16-cifar100", "cifar100", "vgg16", False, "Exp2 final evaluation: full CIFAR-100, E_pre 200"),
    _paper("resnet20-cifar10", "cifar10", "resnet20", False, "transfer (Table 3): ResNet-20, full CIFAR-10"),
    _paper("resnet164-cifar10", "cifar10", "resnet164", False, "transfer (Table 3): ResNet-164 (basic), full CIFAR-10"),
    _paper("vgg13-cifar100", "cifar100", "vgg13", False, "transfer (Table 3): VGG-13-BN, full CIFAR-100"),
    _paper("vgg19-cifar100", "cifar100", "vgg19", False, "transfer (Table 3): VGG-19-BN, full CIFAR-100"),
    Task(name="digits", dataset="digits", model="resnet8", gamma=0.3, pretrain_epochs=30, batch_size=64,
         lr=0.05, finetune_lr=0.005, search_fraction=1.0, image_size=8, in_channels=1,
         augment=D.Augment(pad=1, flip=False), data_options=(("test_fraction", 0.4),),
         description="default CPU task: ResNet-8 on scikit-learn's bundled 8x8 digits; a step takes seconds"),
    Task(name="digits-vgg", dataset="digits", model="vgg-small", gamma=0.3, pretrain_epochs=30, batch_size=64,
         lr=0.05, finetune_lr=0.005, search_fraction=1.0, image_size=8, in_channels=1,
         augment=D.Augment(pad=1, flip=False), data_options=(("test_fraction", 0.4),),
         description="CPU task: a small VGG on the bundled digits (the VGG family at CPU scale)"),
    Task(name="synthetic", dataset="synthetic", model="resnet8", gamma=0.3, pretrain_epochs=4, batch_size=32,
         lr=0.05, finetune_lr=0.01, search_fraction=1.0, image_size=8, in_channels=1, num_classes=4,
         description="tests: a generated 4-class 8x8 task with ResNet-8; a step takes well under a second"),
    Task(name="synthetic-vgg", dataset="synthetic", model="vgg-small", gamma=0.3, pretrain_epochs=4, batch_size=32,
         lr=0.05, finetune_lr=0.01, search_fraction=1.0, image_size=8, in_channels=1, num_classes=4,
         description="tests: the synthetic task with a small VGG"),
]:
    register(_t)

DEFAULT_TASK = "digits"


def get_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; registered tasks: {', '.join(TASKS)}")
    return TASKS[task]


def with_options(task: Task, **changes) -> Task:
    """A variant of a task (e.g. fewer pre-training epochs); its digest differs, so caches do too."""
    return replace(task, **changes)
