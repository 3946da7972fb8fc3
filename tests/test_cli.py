"""The automc command as a user runs it."""

from __future__ import annotations

import json

from automc_env.cli import main, parse_scheme


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_strategies_count_show_and_filter(capsys):
    assert run(capsys, "strategies", "--count")[1].strip() == "4525"
    assert run(capsys, "strategies", "--grid", "code", "--count")[1].strip() == "8934"
    assert run(capsys, "strategies", "--method", "NS", "--count")[1].strip() == "50"
    code, out, _ = run(capsys, "strategies", "--show", "2022")
    assert out.strip() == "2022\tNS(ft=0.3,dec=0.12,max=0.7)"
    code, out, err = run(capsys, "strategies", "--show", "99999")
    assert code == 2 and "0..4524" in err


def test_tasks_lists_the_default(capsys):
    code, out, _ = run(capsys, "tasks")
    assert code == 0 and "digits *" in out and "resnet56-cifar10-mini" in out


def test_parse_scheme_ids_and_names():
    assert parse_scheme("2022,2045", "paper") == [2022, 2045]
    assert parse_scheme("NS(ft=0.3,dec=0.12,max=0.7),2045", "paper") == [2022, 2045]


def test_evaluate_json_then_served_from_store(capsys):
    code, out, _ = run(capsys, "evaluate", "--task", "synthetic", "--scheme", "2002,2003", "--json")
    assert code == 0
    first = json.loads(out)
    assert [s["params"] for s in first["steps"]][-1] < first["base"]["params"]
    code, out, _ = run(capsys, "evaluate", "--task", "synthetic", "--scheme", "2002,2003", "--json")
    second = json.loads(out)
    assert all(s["cached"] for s in second["steps"])
    assert [s["acc"] for s in second["steps"]] == [s["acc"] for s in first["steps"]]
    code, out, _ = run(capsys, "store", "list")
    assert "synthetic" in out


def test_evaluate_bad_scheme_is_a_clear_error(capsys):
    code, _, err = run(capsys, "evaluate", "--task", "synthetic", "--scheme", "2002,5000")
    assert code == 2 and "0..4524" in err
