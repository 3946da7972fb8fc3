"""Compression knowledge: the knowledge graph over the strategy space and strategy embeddings.

* :mod:`knowledge.graph`: the knowledge graph G (entities E1..E5, relations R1..R5) derived from a grid.
* :mod:`knowledge.experience`: the 102 experience records and the 7-number task features.
* :mod:`knowledge.embed`: Algorithm 1 (TransR via pykeen + NN_exp refinement), cached under AUTOMC_HOME.
* :mod:`knowledge.cli`: ``automc knowledge build|report``.

The agent-facing API is re-exported here lazily (importing :mod:`knowledge` does not import pykeen)::

    from knowledge import KnowledgeConfig, load_or_build, task_features
    emb = load_or_build(KnowledgeConfig(grid="paper"))      # builds on first use, then loads
    emb.for_strategy([2022, 2045])                           # (2, 32); emb.start is the START row
    x = emb.normalise(task_features(task, env.base))        # the 7 normalised task features
"""

from __future__ import annotations

_API = {
    "KnowledgeConfig": "knowledge.embed", "StrategyEmbeddings": "knowledge.embed",
    "build_embeddings": "knowledge.embed", "load_or_build": "knowledge.embed", "fingerprint": "knowledge.embed",
    "task_features": "knowledge.experience", "build_graph": "knowledge.graph", "KnowledgeGraph": "knowledge.graph",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'knowledge' has no attribute {name!r}")
