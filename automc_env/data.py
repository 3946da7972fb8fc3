"""Data sets as device-resident tensors, with augmentation done on the device in whole batches.

Every split lives on the training device as one normalised float tensor ``x`` (N, C, H, W) and one
label tensor ``y``; a training epoch is a permutation and slicing, and augmentation (padded random
crop + horizontal flip) is a few vectorised tensor ops per batch — no per-sample Python, no
DataLoader workers, which is what makes short fine-tunes fast.

Sources:
* CIFAR-10/100 from their standard python-pickle folders (``cifar-10-batches-py``,
  ``cifar-100-python``) under the data dir (``$AUTOMC_DATA`` or ``AUTOMC_HOME/data``). Users with
  internet get them downloaded (torchvision's downloader when it imports, else a plain download
  with an MD5 check); offline, a clear error says where to put them. The reader accepts ``bytes``
  keys (the real files) and ``str`` keys (the synthetic folders ``write_synthetic_cifar`` writes
  for tests and offline CPU runs of the paper tasks).
* scikit-learn's bundled digits (1,797 8x8 grey images, shipped in the wheel: works offline).
* a synthetic, learnable image task generated from a seed (for tests).
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from automc_env.home import data_home

CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
        "classes": 100,
    },
}


@dataclass
class Augment:
    """Padded random crop (``pad`` pixels, 0 = off) and random horizontal flip."""

    pad: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


@dataclass
class DeviceData:
    """One split on the device: normalised images ``x`` (N, C, H, W) and labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> DeviceData:
        return DeviceData(self.x.to(device), self.y.to(device))

    def subset(self, index: torch.Tensor | np.ndarray) -> DeviceData:
        index = torch.as_tensor(index, dtype=torch.long, device=self.y.device)
        return DeviceData(self.x[index], self.y[index])

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None,
                shuffle: bool = False, augment: Augment | None = None,
                limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches of one pass (at most ``limit`` batches: fractional epochs stop early)."""
        n = len(self)
        order = torch.randperm(n, generator=generator).to(self.y.device) if shuffle else None
        count = 0
        for start in range(0, n, batch_size):
            if limit is not None and count >= limit:
                return
            idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            x, y = self.x[idx], self.y[idx]
            if augment is not None and augment.active:
                x = augment_batch(x, augment, generator)
            count += 1
            yield x, y

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def augment_batch(x: torch.Tensor, augment: Augment, generator: torch.Generator | None) -> torch.Tensor:
    """Vectorised padded random crop + horizontal flip of a whole batch (random numbers from ``generator``)."""
    b, _, h, w = x.shape
    if augment.pad > 0:
        p = augment.pad
        padded = F.pad(x, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator).to(x.device)
        rows = (offsets[0][:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
        cols = (offsets[1][:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
        batch_idx = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing gathers (B, H, W, C); move channels back.
        x = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if augment.flip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    # The gather leaves channels-last strides. With one channel (digits) such a tensor still counts as
    # contiguous, so .contiguous() keeps them and oneDNN trains the whole network channels-last, whose
    # AVX2 backward kernels corrupted the heap on AMD CPUs. Copy into plain NCHW strides.
    return x.clone(memory_format=torch.contiguous_format)


# ---- loading ---------------------------------------------------------------------------------------

@dataclass
class RawSplits:
    """uint8/float images (N, C, H, W) in [0, 1] as numpy, labels, per-channel mean/std for normalising."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def cifar_missing_message(name: str, root: Path) -> str:
    spec = CIFAR[name]
    return (f"{name} not found: expected the folder {root / spec['folder']} (the python version of the data set, "
            f"with files {', '.join(spec['train'] + spec['test'])}). Download {spec['url']} "
            f"(md5 {spec['md5']}) and extract it into {root}, set AUTOMC_DATA to a folder that holds "
            f"{spec['folder']}, or call with download=True on a machine with internet.")


def download_cifar(name: str, root: Path) -> None:
    """Fetch and extract a CIFAR archive: torchvision's downloader if it imports, else urllib + MD5."""
    spec = CIFAR[name]
    try:  # torchvision is optional (it does not import beside CPU-only torch builds)
        from torchvision.datasets.utils import download_and_extract_archive
    except Exception:  # noqa: BLE001 - any import failure means "use the plain downloader"
        download_and_extract_archive = None
    if download_and_extract_archive is not None:
        download_and_extract_archive(spec["url"], str(root), md5=spec["md5"])
        return
    archive = root / Path(spec["url"]).name
    tmp = archive.with_suffix(".part")
    try:
        urllib.request.urlretrieve(spec["url"], tmp)
    except OSError as e:
        raise FileNotFoundError(f"download of {name} failed ({e}). " + cifar_missing_message(name, root)) from e
    digest = hashlib.md5(tmp.read_bytes()).hexdigest()
    if digest != spec["md5"]:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{archive.name}: MD5 {digest} does not match the published {spec['md5']}")
    tmp.replace(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def load_cifar(name: str, root: str | Path | None = None, download: bool = False) -> RawSplits:
    if name not in CIFAR:
        raise ValueError(f"unknown CIFAR variant {name!r}; known: {sorted(CIFAR)}")
    spec = CIFAR[name]
    root = Path(root) if root is not None else data_home()
    folder = root / spec["folder"]
    if not all((folder / f).exists() for f in spec["train"] + spec["test"]):
        if not download:
            raise FileNotFoundError(cifar_missing_message(name, root))
        root.mkdir(parents=True, exist_ok=True)
        download_cifar(name, root)

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _read_pickle(folder / f)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[spec["label_key"]], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read(spec["train"])
    test_x, test_y = read(spec["test"])
    return RawSplits(train_x, train_y, test_x, test_y, spec["mean"], spec["std"], spec["classes"])


def write_synthetic_cifar(root: str | Path, name: str = "cifar10", train_per_class: int = 10,
                          test_per_class: int = 2, seed: int = 0, noise: float = 0.12) -> Path:
    """Write a small, learnable stand-in for a CIFAR folder that ``load_cifar`` reads; returns the folder.

    The real data cannot be fetched offline (tests, CPU smoke runs of the paper tasks), so this
    writes the python-pickle layout (``cifar-10-batches-py``: ``data_batch_1..5`` + ``test_batch``;
    ``cifar-100-python``: ``train`` + ``test``; uint8 rows of 3072 = 3x32x32, the task's label key,
    ``str`` keys) with the real shapes and class count. Each class is a random colour plus a coarse
    8x8-cell pattern (so it survives the pad-4 crop) and per-pixel noise: a CNN gets well above chance
    within about a hundred SGD steps. Classes are balanced, samples shuffled, train samples spread
    over the train files.
    """
    if name not in CIFAR:
        raise ValueError(f"unknown CIFAR variant {name!r}; known: {sorted(CIFAR)}")
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be >= 1")
    spec = CIFAR[name]
    classes = spec["classes"]
    folder = Path(root) / spec["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.15, 0.85, (classes, 3, 1, 1))
    patterns = np.kron(rng.standard_normal((classes, 3, 4, 4)), np.ones((1, 1, 8, 8)))
    templates = colours + 0.15 * patterns

    def draw(per_class: int) -> tuple[np.ndarray, list[int]]:
        y = rng.permutation(np.repeat(np.arange(classes), per_class))
        x = templates[y] + noise * rng.standard_normal((len(y), 3, 32, 32))
        x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).reshape(len(y), 3072)
        return x, y.tolist()

    def dump(file: str, x: np.ndarray, y: list[int]) -> None:
        d = {"data": x, spec["label_key"]: y, "batch_label": f"synthetic {file}",
             "filenames": [f"{file}_{i}.png" for i in range(len(y))]}
        if name == "cifar100":
            d["coarse_labels"] = [c // 5 for c in y]
        with open(folder / file, "wb") as fh:
            pickle.dump(d, fh)

    x, y = draw(train_per_class)
    for file, idx in zip(spec["train"], np.array_split(np.arange(len(y)), len(spec["train"]))):
        dump(file, x[idx], [y[i] for i in idx])
    x, y = draw(test_per_class)
    dump(spec["test"][0], x, y)
    return folder


def load_digits_splits(test_fraction: float = 0.2, seed: int = 0) -> RawSplits:
    """scikit-learn's digits (8x8, 16 grey levels) split per class into train/test with a fixed seed.

    Read straight from the CSV that ships inside the scikit-learn wheel (the same array
    ``sklearn.datasets.load_digits`` returns) so that loading does not pay for importing sklearn.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the digits task needs scikit-learn installed (it ships the data set)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1].reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    test = stratified_sample(y, test_fraction, seed)
    train = np.setdiff1d(np.arange(len(y)), test)
    mean, std = float(x[train].mean()), float(x[train].std())
    return RawSplits(x[train], y[train], x[test], y[test], (mean,), (std,), 10)


def make_synthetic_splits(num_classes: int = 4, per_class: int = 64, size: int = 8, channels: int = 1,
                          seed: int = 0) -> RawSplits:
    """A small learnable image task: each class is a fixed random template plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((num_classes, channels, size, size)).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(num_classes), n)
        x = templates[y] + 0.35 * rng.standard_normal((len(y), channels, size, size)).astype(np.float32)
        return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)

    train_x, train_y = draw(per_class)
    test_x, test_y = draw(max(8, per_class // 4))
    return RawSplits(train_x, train_y, test_x, test_y, (0.5,) * channels, (0.3,) * channels, num_classes)


def stratified_sample(labels: np.ndarray, fraction: float, seed: int,
                      correct: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a seeded per-class sample of ``fraction`` of each class.

    With ``correct`` (a boolean mask of which samples a reference model classifies correctly), the
    sample keeps each class's correct/incorrect ratio, as the paper's mini data sets do: draw
    ``int(fraction·#correct)`` correct ones, then fill to ``int(fraction·#class)`` with incorrect ones.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        want = max(1, int(fraction * len(members)))
        if correct is None:
            chosen.append(rng.choice(members, size=want, replace=False))
            continue
        good, bad = members[correct[members]], members[~correct[members]]
        n_good = min(len(good), int(fraction * len(good)))
        picks = [rng.choice(good, size=n_good, replace=False)]
        n_bad = min(len(bad), want - n_good)
        picks.append(rng.choice(bad, size=n_bad, replace=False))
        chosen.append(np.concatenate(picks))
    return np.sort(np.concatenate(chosen))


def to_device(x: np.ndarray, y: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
              device: torch.device | str) -> DeviceData:
    """Normalise (uint8 images are scaled to [0, 1] first) and move to the device."""
    xt = torch.as_tensor(x)
    xt = xt.float() / 255.0 if xt.dtype == torch.uint8 else xt.float()
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return DeviceData(((xt - m) / s).contiguous().to(device), torch.as_tensor(y, dtype=torch.long).to(device))
