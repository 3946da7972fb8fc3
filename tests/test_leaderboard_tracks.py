"""Leaderboard tracks: the surrogate and table tracks write labelled result files that validate by an
exact replay on their own backend, files claiming another backend or track (or a changed number) are
rejected, a table track scores regret to the true Pareto front, and boards never mix backends."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest

from agents import leaderboard as L
from agents.base import Budget
from agents.leaderboard.board import _mean_ci, cost_grid
from agents.runner import AGENTS, PRESETS, make_agent
from automc_env.cli import main
from automc_env.env import AutoMCEnv
from automc_env.fingerprint import BENCHMARK_VERSION
from automc_env.metrics import accuracy_rate, rates
from automc_env.space import get_space

SPACE = get_space("paper")
# a small sub-space of the synthetic task for a table track: 3 strategies, schemes of at most 2 steps
SUB = [SPACE.parse(n).id for n in ("NS(ft=0.1,dec=0.12,max=0.9)", "SFP(dec=0.2,soft=0.1,every=1)",
                                   "LFB(ft=0.2,dec=0.12,factor=1,loss=CE)")]
SURROGATE_BUDGET = Budget(executions=40)


def quiet(*_):
    pass


def rejected(entry, *needles, env=None) -> list[str]:
    report = L.validate_entry(entry, env=env)
    assert not report["ok"], "a forged file was accepted"
    text = "\n".join(report["problems"])
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return report["problems"]


def recount(entry: dict) -> dict:
    """A careful cheater's bookkeeping after editing evaluations: rates, final set and metrics consistent."""
    base = entry["base"]
    for e in entry["evaluations"]:
        e["AR"], e["PR"] = accuracy_rate(base["acc"], e["acc"]), rates(base["params"], e["params"])
    known = {tuple(f["scheme"]): f["test_acc"] for f in entry["final"]}
    entry["final"] = [{**{k: f[k] for k in ("scheme", "names", "acc", "params", "flops", "AR", "PR", "FR")},
                       "test_acc": known.get(tuple(f["scheme"]), 90.0)}
                      for f in L.final_set(entry["evaluations"], entry["protocol"]["gamma"])]
    entry["metrics"] = L.summary_metrics(entry)
    return entry


# ---- the surrogate track ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def surrogate(tmp_path_factory):
    """2 agents x 2 seeds on digits-surrogate at a 40-execution budget (the track's, for this module),
    validated in a fresh surrogate environment (as the CLI builds it), records written."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(L.PROTOCOLS, "digits-surrogate",
                   dataclasses.replace(L.get_protocol("digits-surrogate"), budget=SURROGATE_BUDGET))
        root = tmp_path_factory.mktemp("leaderboards")
        paths = L.run_bench("digits-surrogate", ["random", "tpe"], [0, 1], root=root, progress=False, log=quiet)
        reports = {p.name: L.validate_entry(p) for p in paths}
        for p in paths:
            L.write_record(p, reports[p.name])
        yield root, paths, reports


def test_surrogate_bench_writes_labelled_files_that_validate_exactly(surrogate):
    root, paths, reports = surrogate
    assert sorted(p.name for p in paths) == ["random-seed0.json", "random-seed1.json", "tpe-seed0.json",
                                             "tpe-seed1.json"]
    for path in paths:
        assert path.parent == root / "digits-surrogate"
        entry = L.load_entry(path)
        assert (entry["task"], entry["track"], entry["backend"], entry["benchmark"]) == (
            "digits", "digits-surrogate", "surrogate", BENCHMARK_VERSION)
        assert entry["protocol"]["backend"] == entry["environment"]["backend"] == "surrogate"
        assert entry["protocol"]["followed"] and len(entry["evaluations"]) == SURROGATE_BUDGET.executions
        assert len(entry["environment"]["backend_identity"]["model"]) == 64
        report = reports[path.name]
        assert report["ok"], report["problems"]
        assert report["rerun"] == "identical" and report["replayed"] == len(entry["evaluations"])
        assert report["entry"]["metrics"] == entry["metrics"]   # exact: the replay's numbers are the claims
        assert report["entry"]["backend"] == "surrogate" and report["entry"]["track"] == "digits-surrogate"


def test_surrogate_files_claiming_another_backend_or_track_are_rejected(surrogate):
    _, paths, _ = surrogate
    honest = json.loads(paths[0].read_text())
    live = copy.deepcopy(honest)                    # the same numbers, called live
    live["backend"] = "live"
    rejected(live, "backend 'live'", "runs the 'surrogate' backend")
    moved = copy.deepcopy(honest)                   # moved onto the live digits board
    moved["track"] = "digits"
    rejected(moved, "runs the 'live' backend", "surrogate")
    unlabelled = copy.deepcopy(honest)              # labels removed: a file without a track is a live one
    for key in ("track", "backend", "benchmark"):
        del unlabelled[key]
    rejected(unlabelled, "environment.backend 'surrogate'")
    env_kwargs = copy.deepcopy(honest)
    env_kwargs["protocol"]["env_kwargs"] = {"max_len": 3}
    rejected(env_kwargs, "protocol.env_kwargs")
    version = copy.deepcopy(honest)
    version["benchmark"] = "automc-bench/0"
    rejected(version, "benchmark 'automc-bench/0'")
    model = copy.deepcopy(honest)                   # predicted by another surrogate model
    model["environment"]["backend_identity"]["model"] = "0" * 64
    rejected(model, "is not this surrogate")


def test_surrogate_file_with_a_changed_number_is_rejected(surrogate):
    _, paths, _ = surrogate
    honest = json.loads(paths[0].read_text())
    forged = copy.deepcopy(honest)                  # an evaluation below γ one point better, all consistent
    i = next(i for i, e in enumerate(forged["evaluations"]) if e["PR"] < 0.3 and e["acc"] < 99)
    e = forged["evaluations"][i]
    e["acc"] += 1.0
    e["AR"] = accuracy_rate(forged["base"]["acc"], e["acc"])
    forged["metrics"] = L.summary_metrics(forged)
    assert L.invariant_problems(forged) == []       # only the replay can tell
    rejected(forged, f"evaluations[{i}]", "acc claimed")
    cost = copy.deepcopy(honest)                    # a cheaper step: the running compute no longer adds up
    cost["evaluations"][0]["cost"] /= 2
    rejected(cost, "evaluations[0]", "running sum")


def test_surrogate_board_is_labelled_and_never_mixed_with_live(surrogate, tmp_path):
    root, paths, _ = surrogate
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(L.PROTOCOLS, "digits-surrogate",
                   dataclasses.replace(L.get_protocol("digits-surrogate"), budget=SURROGATE_BUDGET))
        out = L.render("digits-surrogate", root)
    assert sorted(r["agent"] for r in out["rows"]) == ["random", "tpe"] and out["entries"] == 4
    assert "HV (test, surrogate)" in out["table"] and "predicted by the surrogate model" in out["table"]
    text = (root / "digits-surrogate" / "README.md").read_text()
    assert text.startswith("# Leaderboard: digits-surrogate — SURROGATE track")
    assert [p.name for p in out["plots"]] == ["pareto.png", "anytime_hv.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in out["plots"])
    # a validated surrogate file copied onto the live digits board is left out, never ranked there
    live = tmp_path / "digits"
    (live / "validation").mkdir(parents=True)
    (live / paths[0].name).write_bytes(paths[0].read_bytes())
    (live / "validation" / paths[0].name).write_bytes(L.record_path(paths[0]).read_bytes())
    entries, excluded = L.board_entries("digits", tmp_path)
    assert entries == [] and excluded == [(paths[0].name, "a digits-surrogate entry")]


def test_anytime_curves_use_a_log_cost_grid_and_t_intervals():
    entries = [{"metrics": {"compute": 100.0}, "evaluations": [{"compute": 2.0}]},
               {"metrics": {"compute": 50.0}, "evaluations": [{"compute": 1.0}]}]
    grid = cost_grid(entries, points=5)
    assert grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(100.0)
    assert np.allclose(np.diff(np.log(grid)), np.log(100.0) / 4)        # evenly spaced on a log axis
    curves = np.array([[0.1, 0.2], [0.3, 0.6]])
    mean, half = _mean_ci(curves)
    assert np.allclose(mean, [0.2, 0.4])
    assert np.allclose(half, 12.7062047 * curves.std(0, ddof=1) / math.sqrt(2))   # t(0.975, 1 dof)
    assert np.all(_mean_ci(curves[:1])[1] == 0)


def test_cli_bench_on_the_surrogate_track_then_validate_and_render(tmp_path, capsys):
    root = tmp_path / "lb"
    assert main(["bench", "--task", "digits", "--track", "surrogate", "--agents", "random", "--seeds", "1",
                 "--budget", "executions=8", "--root", str(root)]) == 0
    path = root / "digits-surrogate" / "random-seed0.json"
    assert "predicted numbers" in capsys.readouterr().out and L.load_entry(path)["backend"] == "surrogate"
    assert main(["leaderboard", "validate", str(path)]) == 0
    assert "VALID" in capsys.readouterr().out
    assert main(["leaderboard", "render", "--root", str(root), "--task", "digits-surrogate"]) == 0
    assert "HV (test, surrogate)" in capsys.readouterr().out


# ---- the AutoMC ablations as agents ---------------------------------------------------------------------------

def test_ablations_are_registered_agents_with_their_variant():
    from agents.automc import VARIANTS

    assert {f"automc-{v}" for v in VARIANTS if v != "full"} == set(L.ABLATION_AGENTS) == set(PRESETS)
    assert set(L.ABLATION_AGENTS) <= set(AGENTS) and set(L.get_protocol("digits-table").agents) == set(AGENTS)
    for name in L.ABLATION_AGENTS:
        agent = make_agent(name, optimal_num=3)
        assert agent.name == name and agent.options["variant"] == name.split("-", 1)[1]
        assert name in L.get_protocol("digits-surrogate").agent_settings
    assert make_agent("automc").name == "automc"
    with pytest.raises(ValueError, match="cannot change that"):
        make_agent("automc-no_kg", variant="full")


def test_ablations_act_and_rerun_on_the_surrogate_track(tmp_path):
    paths = L.run_bench("digits-surrogate", ["automc-legr_only", "automc-non_progressive"], [0], root=tmp_path,
                        budget=Budget(executions=30), progress=False, log=quiet)
    legr = SPACE.method_range("LeGR")
    for path in paths:
        entry = L.load_entry(path)
        name = path.name.split("-seed")[0]
        assert entry["agent"] == name and entry["agent_options"]["variant"] == name.split("-", 1)[1]
        assert entry["agent_stats"]["rounds"] >= 2 and len(entry["evaluations"]) == 30
        if name == "automc-legr_only":
            assert all(legr.start <= a < legr.stop for e in entry["evaluations"] for a in e["scheme"])
        report = L.validate_entry(path)            # the re-run rebuilds the ablation from its name
        assert report["ok"] and report["rerun"] == "identical", report["problems"]


# ---- a table track (synthetic task, a store filled by live steps) ------------------------------------------------

TABLE_TRACK = "synthetic-table"


def table_protocol(budget: Budget) -> L.Protocol:
    return L.Protocol("synthetic", budget, seeds=2, step_cost=0.5, gpu=False, hv_tolerance=25.0, track=TABLE_TRACK,
                      backend="table", env_options=(("actions", SUB), ("max_len", 2)), metric="regret")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Every scheme of the sub-space really computed into a store; the table environment answers from it."""
    store = tmp_path_factory.mktemp("table-store")
    live = AutoMCEnv(task="synthetic", store=store, actions=SUB, max_len=2, progress=False)
    computed = L.reachable_schemes(live)
    env = AutoMCEnv(task="synthetic", backend="table", store=store, actions=SUB, max_len=2)
    return store, env, computed


@pytest.fixture
def track(monkeypatch):
    def register(budget: Budget) -> L.Protocol:
        protocol = table_protocol(budget)
        monkeypatch.setitem(L.PROTOCOLS, TABLE_TRACK, protocol)
        return protocol
    return register


def test_reference_front_is_the_table_front_and_regret_is_zero_only_when_found(table):
    _, env, computed = table
    ref = L.reference_front(env, 0.3, 25.0)
    assert ref["schemes"] == len(computed) == len(L.reachable_schemes(env)) >= 9
    everything = [{"scheme": list(s), "acc": r["acc"], "PR": r["PR"], "failed": None} for s, r in computed.items()]
    front = {tuple(f[0]) for f in ref["front"]}
    assert front and ref["hv"] > 0
    whole = L.regret_metrics(everything, ref, env.base["acc"], 0.3, 25.0)
    assert whole["regret"] == 0.0 and whole["front_found"] == whole["front_size"] == len(ref["front"])
    assert all(v == 0.0 for v in whole["acc_regret"].values() if v is not None)
    best = max(ref["front"], key=lambda f: f[2])            # drop the front's point of highest PR
    missing = [e for e in everything if tuple(e["scheme"]) != tuple(best[0])]
    partial = L.regret_metrics(missing, ref, env.base["acc"], 0.3, 25.0)
    assert partial["regret"] > 0 and partial["front_found"] == whole["front_size"] - 1


def test_table_track_bench_validates_and_scores_regret(table, track, tmp_path):
    _, env, computed = table
    track(Budget(executions=len(computed)))
    [full] = L.run_bench(TABLE_TRACK, ["random"], [0], root=tmp_path, progress=False, log=quiet, env=env)
    small = L.run_bench(TABLE_TRACK, ["random"], [1], root=tmp_path, budget=Budget(executions=2), progress=False,
                        log=quiet, env=env)[0]
    for path in (full, small):
        entry = L.load_entry(path)
        assert entry["backend"] == "table" and entry["reference"]["schemes"] == len(computed)
        report = L.validate_entry(path, env=env)
        assert report["ok"], report["problems"]
        assert report["entry"]["metrics"] == entry["metrics"] and report["entry"]["reference"] == entry["reference"]
        L.write_record(path, report)
    m_full, m_small = L.load_entry(full)["metrics"], L.load_entry(small)["metrics"]
    assert len(L.load_entry(full)["evaluations"]) == len(computed)     # the whole space: the whole front
    assert m_full["regret"] == 0.0 and m_full["front_found"] == m_full["front_size"]
    assert m_small["front_found"] < m_small["front_size"] and m_small["regret"] > 0
    out = L.render(TABLE_TRACK, tmp_path, env=env)
    assert [p.name for p in out["plots"]] == ["pareto.png", "anytime_hv.png", "regret.png"]
    assert "regret (val HV)" in out["table"] and [r["agent"] for r in out["rows"]] == ["random"]
    assert out["rows"][0]["regret"][0] == 0.0 and out["apart"] == [small.name]


def test_table_files_with_a_forged_front_backend_or_number_are_rejected(table, track, tmp_path):
    _, env, computed = table
    track(Budget(executions=6))
    [path] = L.run_bench(TABLE_TRACK, ["random"], [0], root=tmp_path, progress=False, log=quiet, env=env)
    honest = json.loads(path.read_text())
    assert L.validate_entry(honest, env=env)["ok"]
    easier = copy.deepcopy(honest)                 # a smaller true front makes the regret look smaller
    easier["reference"]["hv"] *= 0.9
    easier["metrics"] = L.summary_metrics(easier)
    rejected(easier, "reference.hv", env=env)
    no_front = copy.deepcopy(honest)
    del no_front["reference"]
    no_front["metrics"] = L.summary_metrics(no_front)
    rejected(no_front, "has no reference front", env=env)
    other = copy.deepcopy(honest)
    other["backend"] = other["protocol"]["backend"] = other["environment"]["backend"] = "surrogate"
    rejected(other, "runs the 'table' backend", env=env)
    number = copy.deepcopy(honest)
    number["evaluations"][-1]["params"] -= 100
    rejected(recount(number), "evaluations[", "params claimed", env=env)


def test_an_incomplete_table_is_refused_by_bench_and_validator(table, track, tmp_path):
    store, env, computed = table
    track(Budget(executions=4))
    [path] = L.run_bench(TABLE_TRACK, ["random"], [0], root=tmp_path / "full", progress=False, log=quiet, env=env)
    partial = tmp_path / "partial-store"           # the store without its two-step schemes
    live = AutoMCEnv(task="synthetic", store=partial, actions=SUB, max_len=1, progress=False)
    L.reachable_schemes(live)
    gappy = AutoMCEnv(task="synthetic", backend="table", store=partial, actions=SUB, max_len=2)
    with pytest.raises(L.TrackNotReady, match=r"cannot answer \d+ reachable schemes"):
        L.run_bench(TABLE_TRACK, ["random"], [1], root=tmp_path / "gap", progress=False, log=quiet, env=gappy)
    problems = rejected(json.loads(path.read_text()), env=gappy)
    assert any("cannot be computed" in p or "has no answer" in p for p in problems), problems


def test_cross_track_summary_ranks_table_tracks_by_regret(monkeypatch, tmp_path):
    """The critical-difference summary reuses stats.critical_difference; on a table track a lower
    regret is a better rank."""
    def fake(agent, seed, hv, regret=None):
        m = {"hv": hv, "best_acc": 90.0, "acc_at_pr": {"0.4": None, "0.7": None}, "compute": 1.0, "executions": 1,
             "search_hv": hv, "failed": 0}
        if regret is not None:
            m.update(regret=regret, front_found=1, front_size=3, acc_regret={"0.3": regret, "0.4": None})
        return {"agent": agent, "seed": seed, "protocol": {"followed": True}, "metrics": m}

    boards = {"digits": [fake("a", s, 0.9) for s in (0, 1)] + [fake("b", s, 0.5) for s in (0, 1)],
              "digits-table": [fake("a", s, 0.1, regret=0.01) for s in (0, 1)]
              + [fake("b", s, 0.9, regret=0.30) for s in (0, 1)]}
    monkeypatch.setattr("agents.leaderboard.board.board_entries", lambda task, root, validate=False, log=None:
                        (boards[task], []))
    out = L.summary(["digits", "digits-table"], tmp_path)
    assert out["avg_rank"] == {"a": 1.0, "b": 2.0}     # b's higher test HV on the table track does not count
    assert "digits-table (table)" in (tmp_path / "SUMMARY.md").read_text()
    assert L.summary(["digits", "digits-table"], tmp_path, name="SUMMARY-surrogate") is not None
    assert (tmp_path / "critical_difference-surrogate.png").exists() and (tmp_path / "SUMMARY-surrogate.md").exists()
    assert L.track_name("digits", "surrogate") == "digits-surrogate" == L.track_name("digits-surrogate")
    assert L.track_name("digits", "live") == "digits"
    with pytest.raises(ValueError, match="unknown track"):
        L.track_name("digits", "oracle")


def test_a_search_that_ends_before_its_first_evaluation_writes_a_valid_file(table, track):
    """Plain PPO on a sub-grid can end its search before one valid action: its result file must still
    say what it spent (zero executions), or the validator rejects the bench's own file."""
    from agents.base import Evaluator
    from agents.leaderboard.bench import default_submission, make_entry
    from agents.leaderboard.schema import check_schema

    _, env, _ = table
    budget = Budget(executions=5)
    protocol = track(budget)
    result = Evaluator(env, budget, agent="ppo", seed=0).result
    assert result.evaluations == [] and result.spent["executions"] == 0 and result.spent["compute"] == 0.0
    entry = make_entry(env, result, protocol, default_submission("ppo"), budget)
    check_schema(entry)
    assert entry["spent"]["executions"] == 0 and entry["metrics"]["executions"] == 0
