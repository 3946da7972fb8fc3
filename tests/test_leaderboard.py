"""The leaderboard: bench result files, schema, replay validation, ranking with confidence, rendering."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from agents import leaderboard as L
from agents.base import Budget
from automc_env.cli import main

BUDGET = Budget(executions=6)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A real synthetic board: two random-search seeds, written by the bench harness."""
    root = tmp_path_factory.mktemp("leaderboards")
    paths = L.run_bench("synthetic", ["random"], [0, 1], root=root, budget=BUDGET, progress=False,
                        log=lambda *_: None)
    return root, paths


@pytest.fixture(scope="module")
def env():
    from automc_env.env import AutoMCEnv

    return AutoMCEnv(task="synthetic", store=False, progress=False)


def entry_of(board, i=0):
    return json.loads(board[1][i].read_text())


def test_bench_writes_one_checked_file_per_agent_and_seed(board):
    root, paths = board
    assert [p.name for p in paths] == ["random-seed0.json", "random-seed1.json"]
    for p in paths:
        e = L.load_entry(p)
        assert e["spent"]["executions"] <= BUDGET.executions
        assert e["protocol"]["followed"] is False  # a budget other than the protocol's
        assert e["environment"]["fingerprint"] and e["environment"]["versions"]["torch"]
        assert e["final"], "a 6-execution random search on synthetic reaches γ"
        assert all(f["PR"] >= e["protocol"]["gamma"] for f in e["final"])
        assert 0 < e["metrics"]["hv"] <= 1
        assert e["metrics"] == L.summary_metrics(e)
    assert not list((root / "synthetic" / ".partial").glob("*.json")), "partial files are removed when done"


def test_bench_keeps_finished_files(board):
    root, paths = board
    before = paths[0].read_text()
    logs = []
    assert L.run_bench("synthetic", ["random"], [0], root=root, budget=BUDGET, progress=False,
                       log=logs.append) == []
    assert "exists" in logs[0] and paths[0].read_text() == before


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
    bad.write_text('{"schema": "automc-leaderboard/1", "hv": NaN}')
    with pytest.raises(L.LeaderboardError, match="NaN is not valid JSON"):
        L.load_entry(bad)
    bad.write_bytes(pickle.dumps({"a": 1}))  # a pickle is data we never load
    with pytest.raises(L.LeaderboardError, match="not valid JSON"):
        L.load_entry(bad)
    with pytest.raises(L.LeaderboardError, match="no such file"):
        L.load_entry(tmp_path / "missing.json")


def test_honest_entry_reproduces(board, env):
    report = L.validate_entry(board[1][0], env=env)
    assert report["ok"], report["problems"]
    assert len(report["replayed"]) == len(entry_of(board)["final"])


def forge_test_accuracy(entry: dict) -> dict:
    """Claim 5 points more test accuracy everywhere, with metrics made consistent with the claim."""
    forged = copy.deepcopy(entry)
    for f in forged["final"]:
        f["test_acc"] = min(100.0, f["test_acc"] + 5)
    forged["metrics"] = L.summary_metrics(forged)
    return forged


def test_forged_claims_are_rejected(board, env):
    honest = entry_of(board)
    report = L.validate_entry(forge_test_accuracy(honest), env=env, max_schemes=1)
    assert not report["ok"] and any("claimed test_acc" in p for p in report["problems"])

    inflated = copy.deepcopy(honest)  # a metric the file's own final set does not support
    inflated["metrics"]["hv"] += 0.1
    report = L.validate_entry(inflated, env=env)
    assert not report["ok"] and any("metrics.hv" in p for p in report["problems"])
    assert report["replayed"] == [], "inconsistent files are rejected before any compute"

    hidden = copy.deepcopy(honest)  # dropping a Pareto scheme from the final set is caught
    hidden["final"] = hidden["final"][1:]
    hidden["metrics"] = L.summary_metrics(hidden)
    report = L.validate_entry(hidden, env=env)
    assert not report["ok"] and any("missing from the final set" in p for p in report["problems"])

    overspent = copy.deepcopy(honest)
    overspent["spent"]["executions"] = BUDGET.executions + 1
    report = L.validate_entry(overspent, env=env)
    assert not report["ok"] and any("executions, budget" in p for p in report["problems"])


def fake_entry(agent: str, seed: int, hv: float, followed: bool = True) -> dict:
    return {"agent": agent, "seed": seed, "protocol": {"followed": followed},
            "metrics": {"hv": hv, "best_acc": 90.0 + hv, "acc_at_pr": {"0.4": None, "0.7": 50.0}, "compute": 10.0,
                        "executions": 5, "seconds": 12.0, "search_hv": hv}}


def test_rank_shares_places_the_data_cannot_separate():
    entries = ([fake_entry("a", s, hv) for s, hv in enumerate([0.50, 0.52, 0.51])]
               + [fake_entry("c", s, hv) for s, hv in enumerate([0.50, 0.47, 0.53])]
               + [fake_entry("b", s, hv) for s, hv in enumerate([0.10, 0.12, 0.11])]
               + [fake_entry("d", 0, 0.99, followed=False)])
    rows = L.rank(entries)
    assert [(r["agent"], r["rank"]) for r in rows] == [("a", 1), ("c", 1), ("b", 3)]
    assert rows[0]["hv"][0] == pytest.approx(0.51) and rows[0]["hv"][2] == 3
    assert rows[0]["acc_at_0.4"][2] == 0 and rows[0]["acc_at_0.7"][0] == 50.0


def test_render_writes_table_plots_and_readme_block(board, tmp_path):
    root, _ = board
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- leaderboard:synthetic:start -->\nold\n<!-- leaderboard:synthetic:end -->\nrest\n")
    out = L.render("synthetic", root, readme=readme)
    assert out["entries"] == 2 and out["rows"] == []  # off-protocol budgets are listed apart, not ranked
    text = (root / "synthetic" / "README.md").read_text()
    assert "not ranked" in text and "random-seed0.json" in text
    for png in out["plots"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = readme.read_text()
    assert "old" not in body and "| rank | agent |" in body and body.endswith("rest\n")
    with pytest.raises(ValueError, match="no result files"):
        L.render("synthetic", tmp_path)


def test_render_ranks_protocol_entries(board, tmp_path):
    for i, agent in enumerate(["random", "other"]):
        for seed in (0, 1):
            e = entry_of(board, seed)
            e["protocol"]["followed"], e["agent"] = True, agent
            (tmp_path / "synthetic").mkdir(exist_ok=True)
            (tmp_path / "synthetic" / f"{agent}-seed{seed}.json").write_text(json.dumps(e))
    out = L.render("synthetic", tmp_path)
    # the same two searches under two names: identical HVs, so the t-test cannot separate them
    assert [(r["rank"], len(r["seeds"])) for r in out["rows"]] == [(1, 2), (1, 2)]
    assert out["table"].count("| 1 |") == 2 and "| other | 2 |" in out["table"]


def test_validate_rejects_entries_outside_the_protocols(board, env):
    entry = entry_of(board)
    entry["task"] = "resnet20-cifar10"
    report = L.validate_entry(entry, env=env)
    assert not report["ok"] and "no leaderboard protocol" in report["problems"][0]
    entry = entry_of(board)
    entry["protocol"]["gamma"] = 0.5
    report = L.validate_entry(entry, env=env)
    assert not report["ok"] and any("γ = 0.3" in p for p in report["problems"])


def test_cli_validate_exit_codes(board, tmp_path, capsys):
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(forge_test_accuracy(entry_of(board, 1))))
    assert main(["leaderboard", "validate", str(forged), "--max-schemes", "1"]) == 1
    assert "REJECTED" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["leaderboard", "validate", str(broken)]) == 1
    assert "not valid JSON" in capsys.readouterr().out
    assert main(["leaderboard", "protocol"]) == 0
    assert "`digits`" in capsys.readouterr().out
