"""Claim 2 on the exhaustive table: fronts of single-method and mixed schemes, computed from records."""

from __future__ import annotations

import pytest

from agents.leaderboard.claims import mixing_on_table, mixing_table
from automc_env.env import AutoMCEnv

ENV = AutoMCEnv(task="digits", backend="table", store=False)
NS = ENV.space.parse("NS(ft=0.1,dec=0.12,max=0.9)").id
NS2 = ENV.space.parse("NS(ft=0.3,dec=0.36,max=0.9)").id
SFP = ENV.space.parse("SFP(dec=0.2,soft=0.1,every=1)").id
P = ENV.base["params"]


def rec(scheme, acc, pr):
    return {"design": "exhaustive", "replicate": 0, "scheme": scheme, "acc": acc, "test_acc": acc - 1,
            "params": round(P * (1 - pr))}


def test_groups_and_fronts_follow_the_records():
    records = [rec([NS], 98.0, 0.35), rec([NS, NS2], 97.0, 0.72), rec([SFP], 97.5, 0.4),
               rec([NS, SFP], 98.3, 0.75), rec([SFP, NS], 96.0, 0.8)]
    out = mixing_on_table("digits", records, subsets=50)
    g = out["groups"]
    assert (g["all"]["schemes"], g["mixed"]["schemes"], g["NS only"]["schemes"], g["SFP only"]["schemes"]) == (5, 2, 2, 1)
    assert g["mixed"]["best"]["0.7"] == {"acc": 98.3, "test_acc": 97.3, "PR": pytest.approx(0.75, abs=1e-4)}
    assert g["NS only"]["best"]["0.7"]["acc"] == 97.0 and g["SFP only"]["best"]["0.7"] is None
    # the mixed front dominates here: more HV than any single method, also for random mixed subsets of one scheme
    assert out["mixed_minus_best_single_hv_val"] > 0 and g["all"]["hv_val"] >= g["mixed"]["hv_val"]
    assert 0 <= g["SFP only"]["mixed_same_size_beats"] <= 1
    assert "| mixed | 2 |" in mixing_table(out)


def test_claims_on_a_board_give_verdicts_with_intervals(monkeypatch):
    import numpy as np

    from agents.leaderboard import board
    from agents.leaderboard.claims import claims_on_board, claims_table

    rng = np.random.default_rng(0)
    means = {"automc": 0.8, "random": 0.5, "rvea": 0.8, "automc-no_kg": 0.95}
    entries = [{"agent": a, "metrics": {"hv": m + 0.01 * rng.standard_normal(), "regret": 1 - m}}
               for a, m in means.items() for _ in range(20)]
    monkeypatch.setattr(board, "board_entries", lambda track, root="leaderboards": (entries, []))
    out = claims_on_board("digits-surrogate")
    verdict = {r["rival"]: r for r in out["rows"]}
    assert set(verdict) == {"random", "rvea", "automc-no_kg"}            # only rivals with files
    assert verdict["random"]["verdict"] == "reproduced" and verdict["random"]["ci"][0] > 0
    assert verdict["rvea"]["verdict"] == "inconclusive" and verdict["rvea"]["ci"][0] < 0 < verdict["rvea"]["ci"][1]
    assert verdict["automc-no_kg"]["verdict"] == "refuted" and verdict["automc-no_kg"]["diff"] < 0
    assert "predicted" in claims_table(out)
    # regret: lower is better, so the same ordering gives the same verdicts
    regret = claims_on_board("digits-surrogate", metric="regret")
    assert {r["rival"]: r["verdict"] for r in regret["rows"]} == {k: v["verdict"] for k, v in verdict.items()}
