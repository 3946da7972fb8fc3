"""The leaderboard: bench result files, schema, validation records, ranking, rendering, the CLI."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from agents import leaderboard as L
from agents.base import Budget
from agents.leaderboard.bench import bench_store
from automc_env.cli import main
from automc_env.env import AutoMCEnv


BOARD_BUDGET = Budget(executions=4)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A real synthetic board: random search, seed 0, validated (record written). To keep the suite
    fast the synthetic protocol's budget is 4 executions in this module (the real budget is exercised
    per agent in test_leaderboard_agents.py) and the validator replays from the bench's store (replays
    from scratch: test_leaderboard_forgeries.py and the fresh-home test below)."""
    import dataclasses

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(L.PROTOCOLS, "synthetic", dataclasses.replace(L.get_protocol("synthetic"), budget=BOARD_BUDGET))
        root = tmp_path_factory.mktemp("leaderboards")
        paths = L.run_bench("synthetic", ["random"], [0], root=root, progress=False, log=lambda *_: None)
        env = AutoMCEnv(task="synthetic", store=bench_store(1), progress=False)
        reports = {p.name: L.validate_entry(p, env=env) for p in paths}
        for p in paths:
            L.write_record(p, reports[p.name])
        yield root, paths, reports


def entry_of(board, i=0):
    return json.loads(board[1][i].read_text())


def test_bench_writes_checked_files_that_validate(board):
    root, paths, reports = board
    assert [p.name for p in paths] == ["random-seed0.json"]
    for p in paths:
        e = L.load_entry(p)
        assert e["protocol"]["followed"] and e["environment"]["torch_threads"] == 1
        assert e["spent"]["executions"] == len(e["evaluations"]) == BOARD_BUDGET.executions
        assert all(f["PR"] >= L.get_protocol("synthetic").gamma for f in e["final"])
        assert e["metrics"] == L.summary_metrics(e)
        report = reports[p.name]
        assert report["ok"], report["problems"]
        assert report["rerun"] == "identical" and report["replayed"] == len(e["evaluations"])
        assert report["entry"]["metrics"] == e["metrics"]   # bit-exact replay: the recomputed numbers are the claims
    assert not list((root / "synthetic" / ".partial").glob("*.json")), "partial files are removed when done"
    logs = []   # finished files are kept
    assert L.run_bench("synthetic", ["random"], [0], root=root, budget=BOARD_BUDGET, progress=False,
                       log=logs.append) == []
    assert "exists" in logs[0]


def test_bench_rejects_unknown_task_and_agent(tmp_path):
    with pytest.raises(ValueError, match="no leaderboard protocol"):
        L.run_bench("nope", ["random"], [0], root=tmp_path)
    with pytest.raises(ValueError, match="unknown agents"):
        L.run_bench("synthetic", ["nope"], [0], root=tmp_path)


def test_schema_errors_are_clear(board, tmp_path):
    entry = entry_of(board)
    del entry["final"][0]["test_acc"]
    entry["seed"] = "zero"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entry))
    with pytest.raises(L.LeaderboardError, match=r"(?s)at final/0: 'test_acc' is a required property.*at seed"):
        L.load_entry(bad)
    bad.write_text('{"schema": "automc-leaderboard/2", "hv": NaN}')
    with pytest.raises(L.LeaderboardError, match="NaN is not valid JSON"):
        L.load_entry(bad)
    bad.write_bytes(pickle.dumps({"a": 1}))  # a pickle is data we never load
    with pytest.raises(L.LeaderboardError, match="not valid JSON"):
        L.load_entry(bad)
    with pytest.raises(L.LeaderboardError, match="no such file"):
        L.load_entry(tmp_path / "missing.json")
    archived = Path(__file__).resolve().parents[1] / "leaderboards" / "archive" / "digits-v0" / "random-seed0.json"
    with pytest.raises(L.LeaderboardError, match="automc-leaderboard/2"):   # version 0 files are not current
        L.load_entry(archived)


def copy_with_record(board, tmp_path, name: str, **changes) -> Path:
    """A copy of the validated file under ``tmp_path/synthetic/name`` with the board's record written for it."""
    _, paths, reports = board
    target = tmp_path / "synthetic" / name
    target.parent.mkdir(exist_ok=True)
    entry = json.loads(paths[0].read_text())
    entry.update(changes)
    target.write_text(json.dumps(entry, indent=1))
    L.write_record(target, reports[paths[0].name])
    return target


def test_render_ranks_only_validated_files_and_says_why_others_are_left_out(board, tmp_path):
    validated = copy_with_record(board, tmp_path, "random-seed0.json")
    edited = copy_with_record(board, tmp_path, "random-seed1.json", seed=1)
    edited.write_text(edited.read_text().replace('"notes": ""', '"notes": "edited after validation"', 1))
    (tmp_path / "synthetic" / "nsga2-seed0.json").write_text(validated.read_text().replace('"agent": "random"',
                                                                                            '"agent": "nsga2"'))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- leaderboard:synthetic:start -->\nold\n<!-- leaderboard:synthetic:end -->\nrest\n")
    out = L.render("synthetic", tmp_path, readme=readme)
    assert out["entries"] == 1 and [(r["agent"], r["seeds"], r["rank"]) for r in out["rows"]] == [("random", [0], 1)]
    reasons = dict(out["excluded"])
    assert reasons["nsga2-seed0.json"].startswith("not validated")
    assert "sha256 differs" in reasons["random-seed1.json"]
    text = (tmp_path / "synthetic" / "README.md").read_text()
    assert "## Left out" in text and "nsga2-seed0.json" in text and "τ = 10 pp" in text
    for png in out["plots"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = readme.read_text()
    assert "old" not in body and "| rank | agent |" in body and body.endswith("rest\n")
    with pytest.raises(ValueError, match="no result files"):
        L.render("synthetic", tmp_path / "empty")


def test_render_uses_the_recomputed_numbers_not_the_files(board, tmp_path):
    """A record is the validator's: its numbers are shown even where the file claims others, and a
    record from another validator version or a failed verdict keeps the file off the board."""
    _, paths, reports = board
    recomputed = reports[paths[0].name]["entry"]["metrics"]["hv"]
    boasting = copy_with_record(board, tmp_path, "random-seed0.json")
    claims = json.loads(boasting.read_text())
    claims["metrics"]["hv"] = recomputed + 0.5   # the record below is bound to this edited file
    boasting.write_text(json.dumps(claims))
    L.write_record(boasting, reports[paths[0].name])
    entries, excluded = L.board_entries("synthetic", tmp_path)
    assert not excluded and [e["metrics"]["hv"] for e in entries] == [recomputed]
    other = copy_with_record(board, tmp_path, "random-seed1.json", seed=1)
    record = json.loads(L.record_path(other).read_text())
    record["validator"] = "0000000000000000"
    L.record_path(other).write_text(json.dumps(record))
    rejected = dict(reports[paths[0].name], ok=False, problems=["evaluations[3]: acc claimed 50, replayed 40"])
    L.write_record(boasting, rejected)
    entries, excluded = L.board_entries("synthetic", tmp_path)
    assert entries == [] and dict(excluded) == {
        "random-seed0.json": "rejected: evaluations[3]: acc claimed 50, replayed 40",
        "random-seed1.json": f"validated by another validator version (0000000000000000; this one is "
                             f"{L.validator_version()})"}


def fake_entry(agent: str, seed: int, hv: float, followed: bool = True) -> dict:
    return {"agent": agent, "seed": seed, "protocol": {"followed": followed},
            "metrics": {"hv": hv, "best_acc": 90.0 + hv, "acc_at_pr": {"0.4": None, "0.7": 50.0}, "compute": 10.0,
                        "executions": 5, "search_hv": hv, "failed": 0,
                        "hv_by_tolerance": {"10": hv / 2, "25": hv, "50": hv * 2}}}


def test_rank_uses_holm_corrected_two_sided_tests():
    entries = ([fake_entry("random", s, hv) for s, hv in enumerate([0.50, 0.52, 0.51, 0.49, 0.50])]
               + [fake_entry("c", s, hv) for s, hv in enumerate([0.50, 0.47, 0.53, 0.52, 0.49])]
               + [fake_entry("b", s, hv) for s, hv in enumerate([0.10, 0.12, 0.11, 0.13, 0.10])]
               + [fake_entry("d", 0, 0.99, followed=False)])
    rows = L.rank(entries)
    assert [(r["agent"], r["rank"]) for r in rows] == [("random", 1), ("c", 1), ("b", 3)]
    assert rows[0]["hv"][0] == pytest.approx(0.504) and rows[0]["hv"][2] == 5
    assert rows[0]["acc_at_0.4"][2] == 0 and rows[0]["acc_at_0.7"][0] == 50.0
    diff, lo, hi = rows[2]["vs_random"]
    assert diff == pytest.approx(0.112 - 0.504) and lo < diff < hi < 0 and rows[0]["vs_random"] is None
    table = L.markdown_table(rows, "synthetic")
    assert "Holm" in table and "| 3 | b | 5 |" in table and "[" in table
    sens = L.sensitivity_table(entries, L.get_protocol("synthetic").hv_tolerances)
    assert "τ = 10 pp" in sens and "| b | 0.056 (3) | 0.112 (3) | 0.224 (3) |" in sens
    assert "| d |" not in sens   # off-protocol entries are not ranked under any reference either


def test_summary_across_tasks_draws_a_critical_difference_plot(monkeypatch, tmp_path):
    scores = {"digits": {"random": [0.5, 0.52], "tpe": [0.6, 0.61], "rl": [0.3, 0.31]},
              "synthetic": {"random": [0.4, 0.42], "tpe": [0.45, 0.46], "rl": [0.2, 0.21]}}

    def fake_board(task, root, validate=False, log=None):
        return [fake_entry(a, s, hv) for a, hvs in scores[task].items() for s, hv in enumerate(hvs)], []

    monkeypatch.setattr("agents.leaderboard.board.board_entries", fake_board)
    out = L.summary(["digits", "synthetic"], tmp_path)
    assert out["avg_rank"] == {"tpe": 1.0, "random": 2.0, "rl": 3.0} and out["tasks"] == 2
    assert (tmp_path / "critical_difference.png").read_bytes()[:4] == b"\x89PNG"
    assert "Friedman" in (tmp_path / "SUMMARY.md").read_text()
    assert L.summary(["digits"], tmp_path) is None


def test_validation_replays_at_the_recorded_thread_count(board, monkeypatch):
    import torch

    seen = []

    def spy(entry, env, protocol, report, progress):
        seen.append(torch.get_num_threads())
        report["problems"] = ["stopped by the test"]

    monkeypatch.setattr("agents.leaderboard.validate._replay", spy)
    entry = entry_of(board)
    entry["environment"]["torch_threads"] = 3
    before = torch.get_num_threads()
    L.validate_entry(entry, env=object.__new__(AutoMCEnv))
    assert seen == [3] and torch.get_num_threads() == before


def test_honest_file_passes_on_a_fresh_home(tmp_path):
    """A file written here validates in another process with a fresh AUTOMC_HOME (nothing cached: the
    base model is the shipped one, every step is recomputed) through the command line."""
    [path] = L.run_bench("synthetic", ["random"], [0], root=tmp_path / "lb", budget=Budget(executions=3),
                         progress=False, log=lambda *_: None)
    fresh = dict(os.environ, AUTOMC_HOME=str(tmp_path / "fresh"), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "automc_env.cli", "leaderboard", "validate", str(path)], env=fresh,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "VALID" in run.stdout and "re-run: identical" in run.stdout, run.stdout + run.stderr
    assert "3 evaluations replayed" in run.stdout
    record, why = L.current_record(path)
    assert why == "" and record["ok"] and record["entry"]["metrics"] == L.load_entry(path)["metrics"]
    out = L.render("synthetic", tmp_path / "lb")     # validated, but not at the protocol's budget
    assert out["rows"] == [] and out["apart"] == ["random-seed0.json"] and not out["excluded"]


def test_cli_validate_exit_codes_and_protocol(board, tmp_path, capsys):
    forged = tmp_path / "random-seed0.json"
    entry = entry_of(board)
    for f in entry["final"]:   # metrics left as they were: caught before any replay
        f["test_acc"] = min(100.0, f["test_acc"] + 3)
    forged.write_text(json.dumps(entry))
    assert main(["leaderboard", "validate", str(forged), "--no-record"]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and "metrics.best_acc: claimed" in out and not L.record_path(forged).exists()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["leaderboard", "validate", str(broken)]) == 1
    assert "not valid JSON" in capsys.readouterr().out
    assert json.loads(L.record_path(broken).read_text())["ok"] is False
    with pytest.raises(SystemExit):   # the option that let a validator skip schemes is gone
        main(["leaderboard", "validate", str(forged), "--max-schemes", "1"])


def test_a_data_backend_change_leaves_live_verdicts_current(tmp_path, monkeypatch, request):
    """The validator's version covers what a replay runs: editing the surrogate's code makes surrogate
    and table records stale but not the live board's (hours of real steps); editing a checking module
    or an agent makes every record stale."""
    import shutil

    from automc_env import fingerprint

    root = Path(fingerprint.__file__).resolve().parents[1]
    for package in ("agents", "automc_env", "compressors", "knowledge"):
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("*.npz", "*.gz",
                                                                                          "*.safetensors", "__pycache__"))
    monkeypatch.setattr(fingerprint, "_ROOT", tmp_path)
    version = L.validator_version            # cached per process: digest the tree as it is at each call
    request.addfinalizer(version.cache_clear)  # and leave no digest of the edited copy to later tests
    monkeypatch.setattr(L, "validator_version", lambda b: (version.cache_clear(), version(b))[1])
    before = {b: L.validator_version(b) for b in ("live", "surrogate", "table")}
    assert before["live"] != before["surrogate"] == before["table"]
    surrogate = tmp_path / "automc_env" / "backends" / "surrogate.py"
    surrogate.write_text(surrogate.read_text() + "\nCHANGED = 1\n")
    after = {b: L.validator_version(b) for b in before}
    assert after["live"] == before["live"] and after["surrogate"] != before["surrogate"]
    agent = tmp_path / "agents" / "random_search.py"
    agent.write_text(agent.read_text() + "\nCHANGED = 1\n")
    assert all(L.validator_version(b) != after[b] for b in before)
