"""The kill -9 drill (issue 15): ``automc search --resume`` after a SIGKILL at any moment, also before
the first result was written, recomputes no finished step and completes the search."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

BUDGET = 6


def rows(home: Path) -> dict[str, float]:
    """scheme -> created timestamp of every stored step (a recomputed step gets a new one)."""
    index = home / "store" / "index.sqlite"
    if not index.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10) as conn:
            return dict(conn.execute("SELECT scheme, created FROM steps").fetchall())
    except sqlite3.OperationalError:  # the schema is being created right now
        return {}


def search(home: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "automc_env.cli", "search", "--task", "synthetic", "--agent", "random",
           "--budget", f"executions={BUDGET}", "--seed", "0", "--out", str(out), "--resume"]
    env = dict(os.environ, AUTOMC_HOME=str(home), OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(proc: subprocess.Popen, home: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(rows(home)) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"the search ended before it could be killed:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {at_least} stored steps after {timeout} s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_and_resume_recomputes_no_finished_step(tmp_path):
    home, out = tmp_path / "home", tmp_path / "run.json"
    kill_when(search(home, out), home, at_least=2)  # SIGKILL wherever the search is (usually mid-step)
    killed = rows(home)
    proc = search(home, out)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    final = rows(home)
    assert all(final[k] == v for k, v in killed.items()), "a step finished before the kill was recomputed"
    assert len(final) > len(killed)  # the kill landed mid-search and the resumed one finished it
    result = json.loads(out.read_text())
    assert result["spent"]["executions"] == BUDGET
    evaluated = {",".join(map(str, e["scheme"])) for e in result["evaluations"]}
    assert set(killed) <= evaluated  # the resumed search walked the killed run's path again (replayed)


def test_resume_before_the_first_result_was_written_starts_and_replays(tmp_path, capsys):
    """The state a search killed before its first write leaves: stored steps, no result file."""
    from agents.base import Budget
    from agents.runner import run_search
    from automc_env.env import AutoMCEnv

    store, out = tmp_path / "store", tmp_path / "run.json"
    first = run_search(AutoMCEnv(task="synthetic", store=store), "random", Budget(executions=3), seed=0, out=out,
                       resume=True)  # --resume on a search that never ran simply starts it
    assert "does not exist yet" in capsys.readouterr().err
    env = AutoMCEnv(task="synthetic", store=store)  # a new process's view of the same store
    stored = {r.scheme: r.created for r in env.store.records(env.fingerprint)}
    out.unlink()
    again = run_search(env, "random", Budget(executions=3), seed=0, out=out, resume=True, progress=False)
    assert [e.scheme for e in again.evaluations] == [e.scheme for e in first.evaluations]
    assert {r.scheme: r.created for r in env.store.records(env.fingerprint)} == stored  # nothing recomputed
    assert "resumed" not in again.meta and json.loads(out.read_text())["spent"]["executions"] == 3
    with pytest.raises(ValueError, match="--out"):
        run_search(env, "random", Budget(executions=3), seed=0, out=None, resume=True, progress=False)
