"""The published protocol: the page's tables are the code's, and the digits budget leaves every
agent room to act as itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import leaderboard as L
from automc_env.cli import main


def test_protocol_settings_let_every_agent_act_at_the_digits_budget():
    p = L.get_protocol("digits")
    assert 100 <= p.expected_executions <= 150    # a few hundred reference seconds of ~4 s steps
    s, schemes = p.agent_settings, p.expected_executions / 4.6
    assert schemes / s["tpe"]["n_startup_trials"] >= 3                     # mostly TPE proper
    assert schemes / s["nsga2"]["population"] >= 4 and s["rvea"]["population"] == s["nsga2"]["population"]
    assert p.expected_executions / s["ppo"]["n_steps"] >= 8               # at least 8 policy updates
    assert p.expected_executions / s["automc"]["optimal_num"] >= 10       # at least 10 rounds
    assert L.agent_settings(10**6)["nsga2"]["population"] == 50           # never above the paper's settings


def test_protocol_page_matches_the_code():
    """leaderboards/README.md publishes the protocol: its tables must be the code's."""
    page = (Path(__file__).resolve().parents[1] / "leaderboards" / "README.md").read_text()
    assert L.protocol_table() in page and L.settings_table() in page


def test_cli_prints_the_protocol_and_the_settings(capsys):
    assert main(["leaderboard", "protocol"]) == 0
    out = capsys.readouterr().out
    assert L.protocol_table() in out and L.settings_table() in out


def test_hv_reference_is_the_base_model_minus_the_tolerance():
    # base 98 %, τ = 5: a scheme at 93 % or at PR = γ adds nothing; base accuracy at PR = 1 is the whole box
    assert L.hv_reference(98.0, 0.3, 5.0) == pytest.approx((0.07, 0.7))
    assert L.hypervolume([(93.0, 0.9), (97.0, 0.3)], 98.0, 0.3, 5.0) == 0.0
    assert L.hypervolume([(98.0, 1.0)], 98.0, 0.3, 5.0) == pytest.approx(1.0)
    assert L.hypervolume([(95.5, 0.65)], 98.0, 0.3, 5.0) == pytest.approx(0.5 * 0.5)
    # the old reference (0 % accuracy) counted a 20 % accurate scheme; this one does not
    assert L.hypervolume([(20.0, 0.9)], 98.0, 0.3, 5.0) == 0.0 < L.hypervolume([(20.0, 0.9)], 98.0, 0.3, 98.0)
