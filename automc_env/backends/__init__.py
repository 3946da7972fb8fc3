"""What answers a step of ``AutoMC-v0``: ``live`` (really compress), ``table`` (real results looked up)
or ``surrogate`` (a model trained on real results predicts them).

The environment stays one class with one set of spaces, masks, reset options and info keys; only
what produces the metrics after a step changes. ``live`` is the environment's own path (the
evaluation store and ``compute_step``); the other two implement :class:`Backend` and never touch a
model: they answer from (and only from) data, ``info["backend"]`` says which one answered, and
``info["cost"]`` is the step's deterministic cost (measured for ``table``, predicted for
``surrogate``), so agents, budgets and boards run unchanged on any backend.
"""

from __future__ import annotations

from typing import Protocol

BACKENDS = ("live", "table", "surrogate")


class Backend(Protocol):
    name: str
    real: bool   # answers are real measurements (reported as ``info["cached"] = True``)

    def answer(self, scheme: tuple[int, ...], parent: dict) -> dict:
        """Metrics after ``scheme`` (``parent``: the metrics after ``scheme[:-1]``): acc, test_acc,
        params, flops, cost, cost_counters, compute_seconds."""
        ...


def make_backend(name: str, env, **options) -> Backend:
    """The backend ``name`` for ``env`` (a non-live environment whose base metrics are set)."""
    if name == "table":
        from automc_env.backends.table import TableBackend
        return TableBackend(env, **options)
    if name == "surrogate":
        from automc_env.backends.surrogate import SurrogateBackend
        return SurrogateBackend(env, **options)
    raise ValueError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
