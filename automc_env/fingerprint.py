"""Cache keys: a digest of everything that determines a step's numbers.

A stored step is reused only under the same fingerprint: the task definition, strategy grid, seed,
data split, method options, and the *code* of everything that computes a step (data, models,
metrics, the training loop, and every compressor; docstrings and comments do not count). Any code
change therefore invalidates stored results instead of silently mixing numbers from two versions.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

BENCHMARK_VERSION = "automc-bench/2"
"""The benchmark version: in every fingerprint, result file and data set. Any change that alters a
step's numbers (compressor code, base models, the training loop, data splits, the cost model) bumps
it, so that numbers of two versions are never mixed. Version 0 is everything before pinned base
models and deterministic cost (the first digits board). Version 2 trains one-channel inputs in plain
NCHW layout (version 1's augmented digits batches kept channels-last strides, so oneDNN trained
channels-last, and its AVX2 backward kernels corrupted the heap on AMD CPUs) and pins x86 CPUs to
the AVX2 kernels (``automc_env/__init__.py``); its base models were pre-trained again."""

_ROOT = Path(__file__).resolve().parent.parent
BASE_MODEL_SOURCES = ("automc_env/data.py", "automc_env/models.py", "automc_env/training.py",
                      "automc_env/tasks.py", "automc_env/metrics.py")
STEP_SOURCES = BASE_MODEL_SOURCES + ("automc_env/space.py", "automc_env/step.py", "automc_env/pretrain.py",
                                      "compressors/*.py")


def source_digest(patterns: tuple[str, ...] = STEP_SOURCES) -> str:
    """SHA-256 over the named source files (globs allowed), in sorted order, as code: the syntax
    tree without docstrings and comments, so that editing documentation does not orphan a store
    or a data set while any change to what the code does still changes the digest."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(_ROOT.glob(pattern)):
            h.update(path.relative_to(_ROOT).as_posix().encode())
            h.update(_code_only(path.read_text()).encode())
    return h.hexdigest()


def _code_only(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
