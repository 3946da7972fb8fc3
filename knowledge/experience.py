"""Experience knowledge E: the 102 records of Algorithm 1, and the 7-number task feature vector.

Each record is one result reported in one of the six methods' papers, as transcribed by the AutoMC
authors (``knowledge/data/README.md``): a strategy (method + hyperparameter settings in the *source
paper's* semantics), a task (dataset + original model), and the FLOPs-reduction ratio FR (missing for
22 records) and relative accuracy change AR it achieved.

Task features (paper §3.3.1; search.md §1.2), in the official code's order:

1. number of classes; 2. image size (px); 3. image channels; 4. images per class (all images of the
   data set, train + test, divided by the classes, as in ``datasets.tsv``); 5. the original model's
   top-1 accuracy as a fraction; 6. its parameters (millions); 7. its FLOPs (millions).

FLOPs convention: **multiply-accumulates (MACs)**. ``models.tsv`` copies what each source paper reported,
and most of them report MACs (ResNet-56 = 125.4 M in the LeGR, SFP and LFB rows); a few rows use 2·MAC.
The environment's ``flops`` are MACs, so :func:`task_features` divides them by 1e6 and nothing else.
(The official code passed the ptflops figure 268.89 M for its ResNet-56 search task, i.e. 2·MAC plus
element-wise ops; we do not copy that, since it is inconsistent with most experience rows.)

For our own tasks the images-per-class feature is the search data the task uses: all images of the
data set times ``task.search_fraction`` divided by the classes (mini CIFAR-10: 60,000·0.1/10 = 600, the
value the code passes; mini CIFAR-100 gives the true 60, not the code's copied 600).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

from automc_env.space import METHODS, hyperparameter_name

__all__ = ["DATA_DIR", "FEATURE_NAMES", "ExperienceRecord", "data_digest", "experience_features",
           "feature_means", "load_experience", "task_features"]

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_FILES = ("experience.tsv", "models.tsv", "datasets.tsv", "techniques.tsv")

FEATURE_NAMES: tuple[str, ...] = ("num_classes", "image_size", "channels", "images_per_class",
                                  "top1_fraction", "params_M", "flops_M")
"""The 7 task features, in order."""

# Images in the whole data set (train + test) for our own tasks' data sets; datasets.tsv lists the
# experience data sets the same way. sklearn's digits has 1,797 images.
_DATASET_IMAGES = {"cifar10": 60000, "cifar100": 60000, "digits": 1797}


@dataclass(frozen=True)
class ExperienceRecord:
    """One experience record: strategy settings (our short HP names), task and outcome.

    ``settings`` maps short hyperparameter names to the value *text* as transcribed (e.g. "0.30");
    ``fr`` is None for the AR-only records. ``features`` is the raw 7-number task vector.
    """

    exp_id: int
    source_paper: str
    method: str
    model: str
    dataset: str
    settings: Mapping[str, str]
    candidate_ft: str | None   # LeGR's code-only HP8 (candidate fine-tune epochs); not a grid hyperparameter
    fr: float | None
    ar: float
    features: tuple[float, ...]

    @property
    def has_fr(self) -> bool:
        return self.fr is not None


def _read_tsv(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@lru_cache(maxsize=1)
def load_experience() -> tuple[ExperienceRecord, ...]:
    """All 102 records in file order, with their task features joined from models/datasets.tsv."""
    datasets = {r["dataset"]: r for r in _read_tsv("datasets.tsv")}
    models = {(r["source_paper"], r["dataset"], r["model"]): r for r in _read_tsv("models.tsv")}
    records = []
    for row in _read_tsv("experience.tsv"):
        method = row["method"]
        if method not in METHODS:
            raise ValueError(f"experience row {row['exp_id']}: unknown method {method!r}")
        settings = {}
        for part in row["settings"].split(";"):
            hp, _, value = part.partition("=")
            try:
                hp = hyperparameter_name(hp)
            except ValueError as e:
                raise ValueError(f"experience row {row['exp_id']}: {e}") from None
            settings[hp] = value
        key = (row["source_paper"], row["dataset"], row["model"])
        if key not in models or row["dataset"] not in datasets:
            raise ValueError(f"experience row {row['exp_id']}: no model/dataset information for {key}")
        d, m = datasets[row["dataset"]], models[key]
        features = (float(d["num_classes"]), float(d["image_size_px"]), float(d["image_channels"]),
                    float(d["avg_images_per_class"]), float(m["top1_acc_fraction"]),
                    float(m["params_million"]), float(m["flops_million_as_reported"]))
        records.append(ExperienceRecord(
            exp_id=int(row["exp_id"]), source_paper=row["source_paper"], method=method, model=row["model"],
            dataset=row["dataset"], settings=MappingProxyType(settings),
            candidate_ft=row["candidate_ft"] or None,
            fr=None if row["fr"] == "NA" else float(row["fr"]), ar=float(row["ar"]), features=features))
    return tuple(records)


def experience_features(records: tuple[ExperienceRecord, ...] | None = None) -> np.ndarray:
    """Raw task features of the records, shape (n, 7), float64."""
    records = load_experience() if records is None else records
    return np.array([r.features for r in records], dtype=np.float64)


def feature_means() -> np.ndarray:
    """Mean of each task feature over all experience records: the normaliser of Algorithm 1 and F_mo."""
    return experience_features().mean(axis=0)


def data_digest() -> str:
    """SHA-256 of the knowledge data files: part of the embedding cache key."""
    import hashlib

    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update(name.encode())
        h.update((DATA_DIR / name).read_bytes())
    return h.hexdigest()


def _images_per_class(task) -> float:
    total = _DATASET_IMAGES.get(task.dataset)
    if total is None and task.dataset == "synthetic":
        per_class = int(dict(task.data_options).get("per_class", 64))
        return float(per_class + max(8, per_class // 4))  # make_synthetic_splits: train + test per class
    if total is None:
        raise ValueError(f"task {task.name}: unknown image count for data set {task.dataset!r}; "
                         f"pass base_metrics['images_per_class']")
    return total * float(task.search_fraction) / task.num_classes


def task_features(task, base_metrics: Mapping[str, float]) -> np.ndarray:
    """The raw 7-number task vector of one of our tasks (an ``automc_env.tasks.Task``).

    ``base_metrics`` is the environment's base-model metrics: ``acc`` (top-1, percent), ``params``
    (count) and ``flops`` (MACs per image); an optional ``images_per_class`` overrides feature 4.
    Normalise with :func:`feature_means` (or ``StrategyEmbeddings.feature_means``) before use.
    """
    missing = [k for k in ("acc", "params", "flops") if k not in base_metrics]
    if missing:
        raise ValueError(f"base_metrics lacks {', '.join(missing)}; expected acc (percent), params, flops (MACs)")
    ipc = base_metrics.get("images_per_class")
    ipc = _images_per_class(task) if ipc is None else float(ipc)
    return np.array([task.num_classes, task.image_size, task.in_channels, ipc,
                     float(base_metrics["acc"]) / 100.0, float(base_metrics["params"]) / 1e6,
                     float(base_metrics["flops"]) / 1e6], dtype=np.float64)
