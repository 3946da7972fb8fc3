"""The leaderboard: the benchmark protocol, the bench harness, result files, validation by replay,
statistics and rendering. One module per concern:

* :mod:`~agents.leaderboard.protocol`: per-track (task, backend, environment options) budget, seeds,
  HV reference, replay rules, agents and their settings;
* :mod:`~agents.leaderboard.schema`: the result-file JSON Schema and strict loading;
* :mod:`~agents.leaderboard.metrics`: the reported metrics (HV against the base-model reference, ...);
* :mod:`~agents.leaderboard.bench`: ``automc bench``, one result file per (agent, seed);
* :mod:`~agents.leaderboard.validate`: invariants, whole-trajectory replay, search re-run, records;
* :mod:`~agents.leaderboard.stats`: Holm-corrected pairwise tests, CIs, critical difference;
* :mod:`~agents.leaderboard.board`: ranking and rendering, from validated, recomputed numbers only.

The names below are the package's public interface (``from agents import leaderboard as L``).
"""

from agents.leaderboard.bench import backend_identity, final_evaluation, make_entry, run_bench, versions
from agents.leaderboard.metrics import (TrackNotReady, anytime_hv, anytime_regret, final_set, front_points,
                                        hv_reference, hypervolume, reachable_schemes, reference_front, regret_metrics,
                                        summary_metrics)
from agents.leaderboard.protocol import (ABLATION_AGENTS, ALPHA, BUILTIN_AGENTS, HV_TOLERANCE, HV_TOLERANCE_FACTORS,
                                         PR_LEVELS, PROTOCOLS, SCHEMA_ID, TRACK_BACKENDS, Protocol, agent_settings,
                                         get_protocol, protocol_table, settings_table, track_name, track_of)
from agents.leaderboard.board import (board_entries, collect, markdown_table, print_json, rank, render,
                                       sensitivity_table, summary, update_readme)
from agents.leaderboard.schema import SCHEMA, LeaderboardError, check_schema, file_sha256, load_entry
from agents.leaderboard.validate import (current_record, invariant_problems, record_path, validate_entry,
                                         validate_file, validator_version, write_record)

__all__ = [
    "ABLATION_AGENTS", "BUILTIN_AGENTS", "TRACK_BACKENDS", "TrackNotReady", "anytime_regret", "backend_identity",
    "front_points", "reachable_schemes", "reference_front", "regret_metrics", "track_name", "track_of",
    "ALPHA", "HV_TOLERANCE", "HV_TOLERANCE_FACTORS", "PR_LEVELS", "PROTOCOLS", "SCHEMA", "SCHEMA_ID",
    "LeaderboardError", "Protocol", "agent_settings", "anytime_hv", "board_entries", "check_schema", "collect",
    "current_record", "file_sha256", "final_evaluation", "final_set", "get_protocol", "hv_reference", "hypervolume",
    "invariant_problems", "load_entry", "make_entry", "markdown_table", "print_json", "protocol_table", "rank",
    "record_path", "render", "run_bench", "sensitivity_table", "settings_table", "summary", "summary_metrics",
    "update_readme", "validate_entry", "validate_file", "validator_version", "versions", "write_record",
]
