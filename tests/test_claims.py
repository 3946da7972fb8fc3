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
