"""The result-file format: a JSON Schema, strict loading (plain JSON only) and clear errors.

Nothing in a result file is ever executed or unpickled, and a file that parses and matches the
schema is only *well-formed*: every number in it is a claim that :mod:`agents.leaderboard.validate`
recomputes before anything is ranked or shown.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from agents.leaderboard.protocol import SCHEMA_ID

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_SCHEME = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_NAMES = {"type": "array", "items": {"type": "string"}}
_ACC = {"type": "number", "minimum": 0, "maximum": 100}
_OPT_ACC = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
_RATE = {"type": "number", "maximum": 1}
_COST = {"type": "number", "minimum": 0}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "automc leaderboard result file",
    "type": "object",
    "required": ["schema", "task", "agent", "seed", "submission", "protocol", "environment", "base", "spent",
                 "agent_config", "evaluations", "final", "metrics"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "task": {"type": "string"},
        # optional for the live tracks (a file without them is its task's live track); a data-backed
        # track's file must carry them (checked by the validator's invariants)
        "track": {"type": "string", "minLength": 1},
        "backend": {"enum": ["live", "table", "surrogate"]},
        "benchmark": {"type": "string"},
        "reference": {"type": "object", "required": ["schemes", "hv", "best_acc", "front", "digest"],
                      "properties": {"schemes": _INT, "hv": {"type": "number", "minimum": 0},
                                     "best_acc": {"type": "object", "additionalProperties": _OPT_ACC},
                                     "front": {"type": "array"}, "digest": {"type": "string"}}},
        "agent": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_.+-]+$"},
        "seed": _INT,
        "submission": {
            "type": "object",
            "required": ["who", "algorithm", "code", "environment_modified", "tuned"],
            "properties": {"who": {"type": "string", "minLength": 1}, "algorithm": {"type": "string", "minLength": 1},
                           "code": {"type": "string"}, "environment_modified": {"type": "boolean"},
                           "tuned": {"type": "string"}, "notes": {"type": "string"}},
        },
        "protocol": {
            "type": "object", "required": ["budget", "gamma", "hv_tolerance", "env_seed", "grid"],
            "properties": {"budget": {"type": "object"},
                           "gamma": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                           "hv_tolerance": {"type": "number", "exclusiveMinimum": 0},
                           "env_seed": {"type": "integer"}, "grid": {"type": "string"}},
        },
        "environment": {"type": "object", "required": ["fingerprint", "versions", "torch_threads", "method_options",
                                                       "device"],
                        "properties": {"fingerprint": {"type": "string"}, "versions": {"type": "object"},
                                       "torch_threads": {"type": "integer", "minimum": 1},
                                       "method_options": {"type": "object"}, "device": {"type": "string"},
                                       "cpu_kernels": {"type": ["string", "null"]}}},
        "base": {"type": "object", "required": ["acc", "test_acc", "params", "flops"],
                 "properties": {"acc": _ACC, "test_acc": _ACC, "params": _INT, "flops": _INT}},
        "spent": {"type": "object", "required": ["executions", "compute", "seconds"],
                  "properties": {"executions": _INT, "compute": _COST, "seconds": _COST}},
        "agent_config": {"type": "object"},
        "agent_stats": {"type": "object"},
        "evaluations": {"type": "array", "items": {
            "type": "object",
            "required": ["scheme", "names", "acc", "params", "flops", "AR", "PR", "FR", "execution", "compute",
                         "seconds", "cost", "failed"],
            "properties": {"scheme": _SCHEME, "names": _NAMES, "acc": _ACC, "params": _INT, "flops": _INT,
                           "AR": _NUM, "PR": _RATE, "FR": _RATE, "execution": _INT, "compute": _COST,
                           "seconds": _COST, "cost": _COST, "failed": {"type": ["string", "null"]}},
        }},
        "final": {"type": "array", "items": {
            "type": "object",
            "required": ["scheme", "names", "acc", "test_acc", "params", "flops", "AR", "PR", "FR"],
            "properties": {"scheme": _SCHEME, "names": _NAMES, "acc": _ACC, "test_acc": _ACC, "params": _INT,
                           "flops": _INT, "AR": _NUM, "PR": _RATE, "FR": _RATE},
        }},
        "metrics": {"type": "object", "required": ["hv", "best_acc", "acc_at_pr", "search_hv", "compute",
                                                   "executions"],
                    "properties": {"hv": {"type": "number", "minimum": 0}, "best_acc": _OPT_ACC,
                                   "acc_at_pr": {"type": "object", "additionalProperties": _OPT_ACC},
                                   "search_hv": {"type": "number", "minimum": 0}, "compute": _COST,
                                   "executions": _INT}},
    },
}


class LeaderboardError(ValueError):
    """A result file that cannot be read as a leaderboard entry (the message says where and why)."""


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON here (numbers must be finite)")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_entry(path: str | Path) -> dict:
    """Parse and schema-check one result file (plain JSON only: nothing is executed or unpickled)."""
    path = Path(path)
    try:
        entry = json.loads(path.read_text(), parse_constant=_no_constants)
    except FileNotFoundError:
        raise LeaderboardError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LeaderboardError(f"{path}: not valid JSON: {e}") from None
    check_schema(entry, path)
    return entry


def check_schema(entry, where: str | Path = "entry") -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(entry), key=lambda e: list(e.path))
    if errors:
        lines = [f"  at {'/'.join(str(p) for p in e.path) or '(top level)'}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise LeaderboardError(f"{where}: does not match the result-file schema ({SCHEMA_ID}):\n"
                               + "\n".join(lines) + more)
