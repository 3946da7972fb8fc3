"""The ``table`` backend: answers a step only with a result that was really computed.

Its rows are the released data set of the task (``automc_env.dataset``, this benchmark version, the
environment's replicate) plus the steps in the environment's evaluation store under its fingerprint.
Schemes are matched through strategy equivalence (``StrategySpace.canonical``: an equivalent
strategy computes the same step bit for bit), so asking for LFB's NLL finds the CE row. A scheme it
does not hold raises :class:`TableMiss`, naming the scheme and its longest stored prefix: a table
never falls back to a surrogate or a computation.
"""

from __future__ import annotations

from automc_env import cost
from automc_env import dataset as ds


class TableMiss(LookupError):
    """The table holds no real result for this scheme (see the message for its longest stored prefix)."""


class TableBackend:
    name = "table"
    real = True

    def __init__(self, env, root=None, designs=None):
        self.env = env
        space, task = env.space, env.task
        self._canon = [space.canonical(i, task.pretrain_epochs, env.method_options) for i in range(len(space))]
        rows: dict[tuple[int, ...], dict] = {}
        sources: dict[str, int] = {}
        try:
            records = (ds.load_records(task.name, designs=designs, root=root)
                       if env.space.name == "paper" and not env.method_options else [])  # the data set's setup
        except FileNotFoundError:  # no released data for this task: the store alone
            records = []
        for r in records:
            if r["replicate"] != env.replicate or r["seed"] != env.seed_value or r["grid"] != space.name:
                continue
            key = self.key(r["scheme"])
            if key not in rows:
                rows[key] = {"acc": r["acc"], "test_acc": r["test_acc"], "params": r["params"], "flops": r["flops"],
                             "cost_counters": r["cost_counters"], "compute_seconds": r["seconds"]}
                sources[r["design"]] = sources.get(r["design"], 0) + 1
        if env.store is not None:
            added = 0
            for rec in env.store.records(env.fingerprint):
                key = self.key(rec.scheme)
                if key not in rows and "test_acc" in rec.metrics:
                    rows[key] = {k: rec.metrics[k] for k in ("acc", "test_acc", "params", "flops", "cost_counters",
                                                             "compute_seconds") if k in rec.metrics}
                    added += 1
            if added:
                sources["store"] = added
        self.rows = rows
        self.sources = sources

    def key(self, scheme) -> tuple[int, ...]:
        return tuple(self._canon[int(a)] for a in scheme)

    def __contains__(self, scheme) -> bool:
        return self.key(scheme) in self.rows

    def answer(self, scheme: tuple[int, ...], parent: dict) -> dict:
        row = self.rows.get(self.key(scheme))
        if row is None:
            raise TableMiss(self._miss(scheme))
        return dict(row, cost=self.price(row))

    def price(self, row: dict) -> float:
        """A row's cost, priced from its counters with the current coefficients (as the store's steps are)."""
        return cost.price(row["cost_counters"], self.env.task)

    def _miss(self, scheme: tuple[int, ...]) -> str:
        space = self.env.space
        k = len(scheme)
        while k and self.key(scheme[:k]) not in self.rows:
            k -= 1
        names = " -> ".join(space[a].name for a in scheme)
        prefix = (f"its longest stored prefix is {list(scheme[:k])} ({k} of {len(scheme)} steps)" if k
                  else "not even its first step is stored")
        held = ", ".join(f"{n} {d}" for d, n in sorted(self.sources.items())) or "nothing"
        return (f"scheme {list(scheme)} ({names}) is not in the {self.env.task.name} table "
                f"({len(self.rows)} real steps: {held}); {prefix}. The table answers only real results: "
                f"use backend='live' to compute it, or backend='surrogate' for a prediction")
