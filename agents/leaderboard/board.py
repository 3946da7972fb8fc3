"""The board (``automc leaderboard render``): a task's ranking, from validated numbers only.

A result file is ranked only when its validation record (``validation/<file>``, written by
``automc leaderboard validate``) is current, i.e. bound to the file's sha256 and to this
validator's version, and passing; or, with ``validate=True``, after validating it here. Every
number in the table and the plots comes from the record's *recomputed* entry (the replay), never
from the result file. Files left out are listed with the reason. Entries that ran another budget
than the protocol's are validated but listed apart, not ranked.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from agents.leaderboard import stats
from agents.leaderboard.metrics import anytime_hv
from agents.leaderboard.protocol import ALPHA, PR_LEVELS, get_protocol
from agents.leaderboard.schema import LeaderboardError, load_entry
from agents.leaderboard.validate import current_record, validate_file


def collect(task: str, root: str | Path = "leaderboards", log=None) -> list[dict]:
    """Every schema-valid result file of a task, as claimed (for local comparisons such as
    ``benchmarks/agents.py``; the board itself uses :func:`board_entries`)."""
    entries = []
    for path in sorted((Path(root) / task).glob("*.json")):
        try:
            entry = load_entry(path)
        except LeaderboardError as e:
            if log:
                log(f"skipped: {e}")
            continue
        if entry["task"] != task:
            if log:
                log(f"skipped: {path} is a {entry['task']} entry")
            continue
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


def board_entries(task: str, root: str | Path = "leaderboards", validate: bool = False,
                  log=None) -> tuple[list[dict], list[tuple[str, str]]]:
    """(recomputed entries of the files that passed validation, [(file, why it was left out)])."""
    entries, excluded = [], []
    for path in sorted((Path(root) / task).glob("*.json")):
        record, why = current_record(path)
        if why and validate:
            if log:
                log(f"validating {path} ({why})")
            validate_file(path)
            record, why = current_record(path)
        if why:
            excluded.append((path.name, why))
            continue
        entry = record["entry"]
        if entry["task"] != task:
            excluded.append((path.name, f"a {entry['task']} entry"))
            continue
        entry["_path"] = str(path)
        entries.append(entry)
    return entries, excluded


def _mean_se(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan, len(v)


def _followed(e: dict) -> bool:
    return bool(e["protocol"].get("followed", True))


def rank(entries: list[dict], alpha: float = ALPHA, only_protocol: bool = True,
         reference: str = "random") -> list[dict]:
    """One row per agent (by default only entries that followed the protocol), ranked by mean test HV.

    ``rank`` = 1 + the number of agents with a significantly higher HV (two-sided Welch tests, Holm
    over all pairs, family-wise α); ``vs_random`` = mean HV difference from ``reference`` with its
    95 % Welch CI.
    """
    by_agent: dict[str, list[dict]] = {}
    for e in entries:
        if _followed(e) or not only_protocol:
            by_agent.setdefault(e["agent"], []).append(e)
    rows = []
    for agent, es in by_agent.items():
        es = sorted(es, key=lambda e: e["seed"])
        ms = [e["metrics"] for e in es]
        row = {"agent": agent, "seeds": [e["seed"] for e in es], "hv_values": [m["hv"] for m in ms]}
        for key in ("hv", "best_acc", "compute", "executions", "search_hv"):
            row[key] = _mean_se([m[key] for m in ms])
        row["failed"] = _mean_se([m.get("failed", 0) for m in ms])
        for lv in PR_LEVELS:
            row[f"acc_at_{lv:g}"] = _mean_se([m["acc_at_pr"].get(f"{lv:g}") for m in ms])
        rows.append(row)
    groups = {r["agent"]: r["hv_values"] for r in rows}
    places = stats.ranks(groups, alpha)
    for r in rows:
        r["rank"] = places[r["agent"]]
        r["vs_random"] = (stats.diff_ci(r["hv_values"], groups[reference]) if reference in groups
                          and r["agent"] != reference else None)
    return sorted(rows, key=lambda r: (r["rank"], -r["hv"][0]))


def _cell(stat: tuple[float, float, int], digits: int, total: int) -> str:
    mean, se, n = stat
    if n == 0:
        return "-"
    text = f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if not math.isnan(se) else "")
    return text + (f" ({n}/{total})" if n < total else "")


def _ci(ci) -> str:
    if ci is None:
        return "-"
    diff, lo, hi = ci
    if math.isnan(lo):
        return f"{diff:+.3f}"
    return f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def markdown_table(rows: list[dict], task: str, validated: bool = False) -> str:
    """The board's table; ``validated`` says the rows come from validation records (the board's)."""
    p = get_protocol(task)
    head = ("| rank | agent | seeds | HV (test) | Δ HV vs random [95 % CI] | best acc % at PR ≥ γ (test) | "
            "acc % at PR ≥ 0.4 | acc % at PR ≥ 0.7 | search HV (val) | cost (ref s) | executions (failed) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        n = len(r["seeds"])
        failed = f" ({r['failed'][0]:.1f})" if r["failed"][2] and r["failed"][0] else ""
        lines.append(f"| {r['rank']} | {r['agent']} | {n} | {_cell(r['hv'], 3, n)} | {_ci(r['vs_random'])} | "
                     f"{_cell(r['best_acc'], 2, n)} | {_cell(r['acc_at_0.4'], 2, n)} | "
                     f"{_cell(r['acc_at_0.7'], 2, n)} | "
                     f"{_cell(r['search_hv'], 3, n)} | {_cell(r['compute'], 0, n)} | "
                     f"{_cell(r['executions'], 0, n)}{failed} |")
    budget = ", ".join(f"{k} {v:g}" for k, v in asdict(p.budget).items() if v is not None)
    lines.append("")
    source = ("every number recomputed by replaying the searches" if validated
              else "numbers as the result files claim them (not validated)")
    lines.append(f"Task `{task}`, γ = {p.gamma}, budget per search: {budget}; mean ± standard error over seeds, "
                 f"{source}. HV: hypervolume of the final schemes' "
                 f"(test accuracy, PR) with PR ≥ γ against the reference (base model's test accuracy − "
                 f"{p.hv_tolerance:g} points, PR = γ), normalised by the box up to (base accuracy, PR = 1). "
                 f"Rank: 1 + number of agents with a significantly higher HV (two-sided Welch tests, Holm-corrected "
                 f"over all pairs, α = {ALPHA}). Δ vs random: Welch 95 % CI, uncorrected. (k/n): only k of n "
                 f"seeds reached that PR.")
    return "\n".join(lines)


def sensitivity_table(entries: list[dict], tolerances: Sequence[float]) -> str:
    """Mean HV and rank of every agent under each HV reference (base accuracy − τ points)."""
    ranked = [e for e in entries if _followed(e)]
    agents = sorted({e["agent"] for e in ranked})
    if not agents:
        return ""
    cols = []
    for t in tolerances:
        groups = {a: [e["metrics"]["hv_by_tolerance"][f"{t:g}"] for e in ranked if e["agent"] == a] for a in agents}
        places = stats.ranks(groups)
        cols.append({a: (float(np.mean(groups[a])), places[a]) for a in agents})
    head = "| agent | " + " | ".join(f"τ = {t:g} pp: HV (rank)" for t in tolerances) + " |"
    lines = [head, "|---" * (len(tolerances) + 1) + "|"]
    order = sorted(agents, key=lambda a: (cols[len(cols) // 2][a][1], -cols[len(cols) // 2][a][0]))
    for a in order:
        lines.append(f"| {a} | " + " | ".join(f"{c[a][0]:.3f} ({c[a][1]})" for c in cols) + " |")
    leaders = [max(agents, key=lambda a: c[a][0]) for c in cols]
    lines += ["", "Highest mean HV under each reference: "
              + ", ".join(f"τ = {t:g}: {a}" for t, a in zip(tolerances, leaders)) + "."]
    return "\n".join(lines)


def _plots(entries: list[dict], rows: list[dict], out_dir: Path, task: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = get_protocol(task)
    agents = [r["agent"] for r in rows]
    colours = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(agents)}
    by_agent = {a: [e for e in entries if e["agent"] == a and _followed(e)] for a in agents}

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for a in agents:
        pts = [(f["PR"], f["test_acc"]) for e in by_agent[a] for f in e["final"]]
        front = sorted(q for q in pts if not any(o[0] >= q[0] and o[1] >= q[1] and o != q for o in pts))
        ax.scatter([q[0] for q in pts], [q[1] for q in pts], s=10, alpha=0.35, color=colours[a])
        ax.plot([q[0] for q in front], [q[1] for q in front], marker="o", ms=4, color=colours[a], label=a)
    if entries:
        base = entries[0]["base"]["test_acc"]
        ax.axhline(base, color="0.5", lw=0.8, ls=":", label="base model")
        ax.axhline(base - p.hv_tolerance, color="0.5", lw=0.8, ls="--",
                   label=f"HV reference (−{p.hv_tolerance:g} pp)")
    ax.axvline(p.gamma, color="k", lw=0.8, ls="--", label="γ")
    pareto_png = _save(fig, ax, out_dir / "pareto.png", "parameter reduction rate PR", "test accuracy (%)",
                       f"{task}: final schemes of all seeds, pooled front per agent")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    top = max((e["metrics"]["compute"] for e in entries), default=1.0) or 1.0
    grid = np.linspace(0, top, 60)
    for a in agents:
        curves = np.array([anytime_hv(e, grid) for e in by_agent[a]])
        if len(curves) == 0:
            continue
        mean = curves.mean(0)
        se = curves.std(0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
        ax.plot(grid, mean, color=colours[a], label=f"{a} ({len(curves)} seeds)")
        ax.fill_between(grid, mean - se, mean + se, color=colours[a], alpha=0.2)
    anytime_png = _save(fig, ax, out_dir / "anytime_hv.png", "cost (reference seconds)",
                        "hypervolume on the search split (val)", f"{task}: anytime HV, mean ± SE over seeds")
    return [pareto_png, anytime_png]


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


README_START, README_END = "<!-- leaderboard:{task}:start -->", "<!-- leaderboard:{task}:end -->"


def render(task: str, root: str | Path = "leaderboards", readme: str | Path | None = None, log=None,
           validate: bool = False) -> dict:
    """Rank a task's validated entries; write ``<root>/<task>/README.md`` with the table, the HV
    reference sensitivity, the excluded files and the two PNG plots. With ``readme``, the table also
    replaces the block between the task's markers in that file. ``validate`` validates files that
    have no current record first (a full replay each)."""
    files = sorted((Path(root) / task).glob("*.json"))
    if not files:
        raise ValueError(f"no result files for task {task!r} under {Path(root) / task}")
    entries, excluded = board_entries(task, root, validate=validate, log=log)
    for name, why in excluded:
        if log:
            log(f"left out {name}: {why}")
    rows = rank(entries)
    table = markdown_table(rows, task, validated=True)
    out_dir = Path(root) / task
    plots = _plots(entries, rows, out_dir, task)
    apart = [e for e in entries if not _followed(e)]
    body = [f"# Leaderboard: {task}", "",
            f"Generated by `automc leaderboard render --task {task}` from the result files in this folder that "
            "passed `automc leaderboard validate` (replayed; every number below is recomputed); protocol in "
            "../README.md.", "", table, ""]
    if not rows:
        body += ["No validated entry followed the protocol's budget: nothing is ranked yet.", ""]
    sensitivity = sensitivity_table(entries, get_protocol(task).hv_tolerances)
    if sensitivity:
        body += ["## The ranking under other HV references", "",
                 "Reference accuracy = base model's test accuracy − τ points (the board uses τ = "
                 f"{get_protocol(task).hv_tolerance:g}).", "", sensitivity, ""]
    body += ["![Pareto fronts](pareto.png)", "", "![Anytime hypervolume](anytime_hv.png)", ""]
    if apart:
        body += [f"{len(apart)} validated entries ran a budget other than the protocol's and are not ranked: "
                 + ", ".join(Path(e["_path"]).name for e in apart), ""]
    if excluded:
        body += ["## Left out", "", "| file | why |", "|---|---|"]
        body += [f"| {name} | {why.replace('|', '/')} |" for name, why in excluded] + [""]
    (out_dir / "README.md").write_text("\n".join(body))
    if readme is not None:
        update_readme(readme, task, table)
    return {"rows": rows, "table": table, "plots": plots, "entries": len(entries), "excluded": excluded,
            "apart": [Path(e["_path"]).name for e in apart]}


def summary(tasks: Sequence[str], root: str | Path = "leaderboards", validate: bool = False) -> dict | None:
    """Critical-difference summary across tasks (agents ranked on every listed task), written to
    ``<root>/SUMMARY.md`` and ``<root>/critical_difference.png``; None when fewer than 2 tasks share
    at least 2 agents."""
    scores: dict[str, dict[str, float]] = {}
    for task in tasks:
        entries, _ = board_entries(task, root, validate=validate)
        rows = rank(entries)
        if rows:
            scores[task] = {r["agent"]: r["hv"][0] for r in rows}
    if len(scores) < 2:
        return None
    result = stats.critical_difference(scores)
    if len(result["agents"]) < 2:
        return None
    root = Path(root)
    png = root / "critical_difference.png"
    stats.cd_plot(result, png)
    lines = ["# Across tasks", "", f"Average rank of each agent's mean test HV over {result['tasks']} tasks "
             f"({', '.join(scores)}); Friedman test and Nemenyi critical difference (α = {ALPHA}).", "",
             "| agent | average rank |", "|---|---|"]
    lines += [f"| {a} | {result['avg_rank'][a]:.2f} |" for a in result["agents"]]
    p = result["p"]
    friedman = (f"Friedman χ² = {result['chi2']:.3f}, p = {p:.3g}. " if p is not None
                else "Friedman test: needs at least 3 agents. ")
    lines += ["", friedman + f"CD = {result['cd']:.2f}: agents whose average ranks differ by less are not "
              "distinguishable.", "", "![critical difference](critical_difference.png)", ""]
    (root / "SUMMARY.md").write_text("\n".join(lines))
    return {**result, "plot": png, "scores": scores}


def update_readme(readme: str | Path, task: str, table: str) -> None:
    path = Path(readme)
    text = path.read_text()
    start, end = README_START.format(task=task), README_END.format(task=task)
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block to replace")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{table}\n{end}{after}")


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=1, default=str)
    print()
