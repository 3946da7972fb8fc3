"""The board (``automc leaderboard render``): a task's ranking, from validated numbers only.

A result file is ranked only when its validation record (``validation/<file>``, written by
``automc leaderboard validate``) is current, i.e. bound to the file's sha256 and to this
validator's version, and passing; or, with ``validate=True``, after validating it here. Every
number in the table and the plots comes from the record's *recomputed* entry (the replay), never
from the result file. Files left out are listed with the reason. Entries that ran another budget
than the protocol's are validated but listed apart, not ranked.

**Tracks.** A board is one track's (``leaderboards/<track>/``): files of another track, task or
backend are left out. A surrogate track's board says on its title, its table and every plot that its
numbers are predictions, and it is never merged with a live board (the cross-track summary keeps
surrogate tracks apart). A table track ranks by regret to the true front (lower is better) and draws
the regret against cost. Anytime curves are drawn against cumulative cost on a log axis with 95 %
confidence bands over seeds.
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
from agents.leaderboard.metrics import TrackNotReady, anytime_hv, anytime_regret, reference_front
from agents.leaderboard.protocol import ALPHA, PR_LEVELS, Protocol, get_protocol, track_of
from agents.leaderboard.schema import LeaderboardError, load_entry
from agents.leaderboard.validate import current_record, validate_file


def collect(task: str, root: str | Path = "leaderboards", log=None) -> list[dict]:
    """Every schema-valid result file of a track (a task's name: its live track), as claimed (for local
    comparisons such as ``benchmarks/compare_agents.py``; the board itself uses :func:`board_entries`)."""
    entries = []
    for path in sorted((Path(root) / task).glob("*.json")):
        try:
            entry = load_entry(path)
        except LeaderboardError as e:
            if log:
                log(f"skipped: {e}")
            continue
        if track_of(entry) != task:
            if log:
                log(f"skipped: {path} is a {track_of(entry)} entry")
            continue
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


def backend_stamp(protocol: Protocol, env=None) -> tuple[str, str | None, str]:
    """(key, value, what) that a data-backed record must still match: the surrogate model's digest or
    the digest of the table's reachable space (its true front's input). A record validated against
    another model or table is stale. ``value`` None: the backend cannot say (an incomplete table)."""
    from agents.leaderboard.bench import backend_identity

    try:
        env = env or protocol.make_env()
    except ValueError:   # no surrogate model / shipped record for this task here
        return ("model" if protocol.surrogate else "digest"), None, protocol.backend
    if protocol.backend == "surrogate":
        return "model", backend_identity(env)["model"], "surrogate model"
    try:
        return "digest", reference_front(env, protocol.gamma, protocol.hv_tolerance)["digest"], "table"
    except TrackNotReady:
        return "digest", None, "table"


def board_entries(task: str, root: str | Path = "leaderboards", validate: bool = False,
                  log=None, env=None) -> tuple[list[dict], list[tuple[str, str]]]:
    """(recomputed entries of the files that passed validation, [(file, why it was left out)]).

    ``task`` is the track; on a data-backed track a record must have been validated against the
    current surrogate model or table (``env`` (tests): the track's environment to compare with)."""
    entries, excluded = [], []
    protocol = get_protocol(task)
    stamp = None
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
        if track_of(entry) != task or entry["task"] != protocol.task:
            excluded.append((path.name, f"a {track_of(entry)} entry"))
            continue
        if entry.get("backend", "live") != protocol.backend:
            excluded.append((path.name, f"a {entry.get('backend', 'live')} result on a {protocol.backend} track"))
            continue
        if protocol.backend != "live":
            stamp = stamp or backend_stamp(protocol, env)
            key, value, what = stamp
            mine = ((entry.get("backend_identity") or {}).get("model") if key == "model"
                    else (entry.get("reference") or {}).get("digest"))
            if value is None or mine != value:
                excluded.append((path.name, f"validated against another {what} than the current one: validate again"
                                 if value is not None else f"no complete {what} here to check it against"))
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
         reference: str = "random", metric: str = "hv") -> list[dict]:
    """One row per agent (by default only entries that followed the protocol), ranked by mean test HV
    (``metric="hv"``) or by mean regret to the true front (``metric="regret"``, lower is better).

    ``rank`` = 1 + the number of agents significantly better (two-sided Welch tests, Holm over all
    pairs, family-wise α); ``vs_random`` = mean difference of the metric from ``reference`` with its
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
        if metric == "regret":
            row["regret_values"] = [m["regret"] for m in ms]
            row["regret"] = _mean_se(row["regret_values"])
            row["front_found"] = _mean_se([m["front_found"] for m in ms])
            row["front_size"] = ms[0]["front_size"]
            for level in ms[0]["acc_regret"]:
                row[f"acc_regret_{level}"] = _mean_se([m["acc_regret"].get(level) for m in ms])
        rows.append(row)
    values = {r["agent"]: r["regret_values"] if metric == "regret" else r["hv_values"] for r in rows}
    # stats.ranks counts "significantly higher": a lower regret is better
    places = stats.ranks({a: [-v for v in vs] if metric == "regret" else vs for a, vs in values.items()}, alpha)
    for r in rows:
        r["rank"] = places[r["agent"]]
        r["vs_random"] = (stats.diff_ci(values[r["agent"]], values[reference]) if reference in values
                          and r["agent"] != reference else None)
    if metric == "regret":
        return sorted(rows, key=lambda r: (r["rank"], r["regret"][0]))
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


def backend_label(p: Protocol) -> str:
    """What a board's numbers are: said on every surrogate board's title, table and plots."""
    if p.backend == "surrogate":
        return "SURROGATE (predicted numbers, not measurements)"
    if p.backend == "table":
        return "table (real results looked up)"
    return "live (real compressions)"


def markdown_table(rows: list[dict], task: str, validated: bool = False) -> str:
    """The board's table; ``validated`` says the rows come from validation records (the board's).
    ``task`` is the track; a surrogate track's columns say "surrogate", a table track's lead with regret."""
    p = get_protocol(task)
    tag = ", surrogate" if p.surrogate else ""
    regret = p.metric == "regret"
    levels = [f"{lv:g}" for lv in (p.gamma, *PR_LEVELS)]
    head = "| rank | agent | seeds | "
    if regret:
        head += ("regret (val HV) | Δ regret vs random [95 % CI] | true-front points found | "
                 + " | ".join(f"acc regret at PR ≥ {lv} (pp)" for lv in levels) + " | HV (test) | ")
    else:
        head += f"HV (test{tag}) | Δ HV vs random [95 % CI] | "
    head += (f"best acc % at PR ≥ γ (test{tag}) | acc % at PR ≥ 0.4 | acc % at PR ≥ 0.7 | "
             f"search HV (val{tag}) | cost (ref s{tag}) | executions (failed) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        n = len(r["seeds"])
        failed = f" ({r['failed'][0]:.1f})" if r["failed"][2] and r["failed"][0] else ""
        line = f"| {r['rank']} | {r['agent']} | {n} | "
        if regret:
            line += (f"{_cell(r['regret'], 4, n)} | {_ci(r['vs_random'])} | "
                     f"{_cell(r['front_found'], 1, n)} of {r['front_size']} | "
                     + " | ".join(_cell(r.get(f"acc_regret_{lv}", (math.nan, math.nan, 0)), 2, n) for lv in levels)
                     + f" | {_cell(r['hv'], 3, n)} | ")
        else:
            line += f"{_cell(r['hv'], 3, n)} | {_ci(r['vs_random'])} | "
        lines.append(line + f"{_cell(r['best_acc'], 2, n)} | {_cell(r['acc_at_0.4'], 2, n)} | "
                     f"{_cell(r['acc_at_0.7'], 2, n)} | "
                     f"{_cell(r['search_hv'], 3, n)} | {_cell(r['compute'], 0, n)} | "
                     f"{_cell(r['executions'], 0, n)}{failed} |")
    budget = ", ".join(f"{k} {v:g}" for k, v in asdict(p.budget).items() if v is not None)
    lines.append("")
    source = ("every number recomputed by replaying the searches" if validated
              else "numbers as the result files claim them (not validated)")
    if p.surrogate:
        lines.append(f"**Surrogate track `{p.track}`: every accuracy, size and cost here is predicted by the "
                     f"surrogate model, not measured; never compare it with a live board.**")
        lines.append("")
    if regret:
        lines.append("Regret: the hypervolume (search split, val) of the true Pareto front of every scheme the "
                     "track's agents can reach (all in the table) minus that of the front the search found; 0 = "
                     "the whole front found. Acc regret: the best reachable val accuracy at PR ≥ the level minus "
                     "the best the search found there. Ranked by regret (lower is better).")
        lines.append("")
    env = ", ".join(f"{k}={v}" for k, v in p.env_options)
    lines.append(f"Track `{p.track}` (task `{p.task}`, backend {backend_label(p)}"
                 + (f", {env}" if env else "") + f"), γ = {p.gamma}, budget per search: {budget}; "
                 f"mean ± standard error over seeds, "
                 f"{source}. HV: hypervolume of the final schemes' "
                 f"(test accuracy, PR) with PR ≥ γ against the reference (base model's test accuracy − "
                 f"{p.hv_tolerance:g} points, PR = γ), normalised by the box up to (base accuracy, PR = 1). "
                 f"Rank: 1 + number of agents significantly better (two-sided Welch tests, Holm-corrected "
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


def _mean_ci(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (rows) and the half-width of its t confidence interval (0 with one seed)."""
    from scipy import stats as sps

    mean = curves.mean(0)
    n = len(curves)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, float(sps.t.ppf(0.5 + level / 2, n - 1)) * curves.std(0, ddof=1) / math.sqrt(n)


def cost_grid(entries: list[dict], points: int = 80) -> np.ndarray:
    """Log-spaced cumulative costs from the cheapest first step to the largest spend of any search."""
    top = max((e["metrics"]["compute"] for e in entries), default=1.0) or 1.0
    firsts = [e["evaluations"][0]["compute"] for e in entries
              if e["evaluations"] and e["evaluations"][0]["compute"] > 0]
    low = min(firsts, default=top / 1e3)
    return np.geomspace(min(low, top), top, points)


def _plots(entries: list[dict], rows: list[dict], out_dir: Path, task: str) -> list[Path]:
    """pareto.png (pooled fronts per agent), anytime_hv.png (log cost axis, 95 % CI bands) and, on a
    table track, regret.png (regret to the true front against cost). ``task`` is the track."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = get_protocol(task)
    label = " [SURROGATE: predicted]" if p.surrogate else f" [{p.backend}]" if p.backend != "live" else ""
    agents = [r["agent"] for r in rows]
    colours = {a: plt.get_cmap("tab20" if len(agents) > 10 else "tab10")(i % 20) for i, a in enumerate(agents)}
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
    pareto_png = _save(fig, ax, out_dir / "pareto.png", "parameter reduction rate PR",
                       "test accuracy (%)" + (" — predicted" if p.surrogate else ""),
                       f"{task}{label}: final schemes, pooled front per agent")

    grid = cost_grid(entries)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for a in agents:
        curves = np.array([anytime_hv(e, grid) for e in by_agent[a]])
        if len(curves) == 0:
            continue
        mean, half = _mean_ci(curves)
        ax.plot(grid, mean, color=colours[a], label=f"{a} ({len(curves)} seeds)")
        ax.fill_between(grid, mean - half, mean + half, color=colours[a], alpha=0.2)
    ax.set_xscale("log")
    anytime_png = _save(fig, ax, out_dir / "anytime_hv.png", "cumulative cost (reference seconds, log)",
                        "hypervolume on the search split (val)",
                        f"{task}{label}: anytime HV, mean ± 95 % CI")
    plots = [pareto_png, anytime_png]
    if p.metric == "regret" and entries:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for a in agents:
            curves = np.array([anytime_regret(e, grid) for e in by_agent[a]])
            if len(curves) == 0:
                continue
            mean, half = _mean_ci(curves)
            ax.plot(grid, mean, color=colours[a], label=f"{a} ({len(curves)} seeds)")
            ax.fill_between(grid, np.maximum(mean - half, 0), mean + half, color=colours[a], alpha=0.2)
        ax.set_xscale("log")
        ax.axhline(0, color="k", lw=0.8)
        plots.append(_save(fig, ax, out_dir / "regret.png", "cumulative cost (reference seconds, log)",
                           "regret to the true front (val HV)",
                           f"{task}{label}: regret to the true front, mean ± 95 % CI"))
    return plots


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
           validate: bool = False, env=None) -> dict:
    """Rank a track's validated entries; write ``<root>/<track>/README.md`` with the table, the HV
    reference sensitivity, the excluded files and the PNG plots (a table track adds regret.png).
    With ``readme``, the table also replaces the block between the track's markers in that file.
    ``validate`` validates files that have no current record first (a full replay each); ``env``
    (tests): the data-backed track's environment the records are checked against."""
    files = sorted((Path(root) / task).glob("*.json"))
    if not files:
        raise ValueError(f"no result files for track {task!r} under {Path(root) / task}")
    p = get_protocol(task)
    entries, excluded = board_entries(task, root, validate=validate, log=log, env=env)
    for name, why in excluded:
        if log:
            log(f"left out {name}: {why}")
    rows = rank(entries, metric=p.metric)
    table = markdown_table(rows, task, validated=True)
    out_dir = Path(root) / task
    plots = _plots(entries, rows, out_dir, task)
    apart = [e for e in entries if not _followed(e)]
    title = f"# Leaderboard: {task}" + (" — SURROGATE track (predicted numbers)" if p.surrogate else
                                         f" — {p.backend} track" if p.backend != "live" else "")
    body = [title, "",
            f"Generated by `automc leaderboard render --task {task}` from the result files in this folder that "
            "passed `automc leaderboard validate` (replayed; every number below is recomputed); protocol in "
            f"../README.md. Backend: {backend_label(p)}.", "", table, ""]
    if not rows:
        body += ["No validated entry followed the protocol's budget: nothing is ranked yet.", ""]
    sensitivity = sensitivity_table(entries, get_protocol(task).hv_tolerances)
    if sensitivity:
        body += ["## The ranking under other HV references", "",
                 "Reference accuracy = base model's test accuracy − τ points (the board uses τ = "
                 f"{get_protocol(task).hv_tolerance:g}).", "", sensitivity, ""]
    body += ["![Pareto fronts](pareto.png)", "", "![Anytime hypervolume](anytime_hv.png)", ""]
    if p.metric == "regret":
        body += ["![Regret to the true front](regret.png)", ""]
    if apart:
        body += [f"{len(apart)} validated entries ran a budget other than the protocol's and are not ranked: "
                 + ", ".join(Path(e["_path"]).name for e in apart), ""]
    if excluded:
        body += ["## Left out", "", "| file | why |", "|---|---|"]
        body += [f"| {name} | {why.replace('|', '/')} |" for name, why in excluded] + [""]
    body += ["`MANIFEST.jsonl`: every ranked file's name, sha256, agent, seed and validated metrics, so a "
             "board can be audited (and its files recognised when regenerated) even where the files themselves "
             "are too large to keep beside it.", ""]
    (out_dir / "README.md").write_text("\n".join(body))
    write_manifest(entries, out_dir / "MANIFEST.jsonl")
    if readme is not None:
        update_readme(readme, task, table)
    return {"rows": rows, "table": table, "plots": plots, "entries": len(entries), "excluded": excluded,
            "apart": [Path(e["_path"]).name for e in apart]}


def write_manifest(entries: Sequence[dict], path: Path) -> Path:
    """One JSON line per ranked file: name, sha256, agent, seed and the validated metrics."""
    from agents.leaderboard.schema import file_sha256

    lines = []
    for e in sorted(entries, key=lambda e: Path(e["_path"]).name):
        lines.append(json.dumps({"file": Path(e["_path"]).name, "sha256": file_sha256(e["_path"]), "agent": e["agent"],
                                 "seed": e["seed"], "metrics": e["metrics"]}, sort_keys=True, allow_nan=False))
    path.write_text("\n".join(lines) + "\n")
    return path


def summary(tasks: Sequence[str], root: str | Path = "leaderboards", validate: bool = False,
            name: str = "SUMMARY") -> dict | None:
    """Critical-difference summary across tracks (agents ranked on every listed track by the track's
    metric: mean test HV, or mean regret on a table track), written to ``<root>/<name>.md`` and
    ``<root>/critical_difference.png`` (``critical_difference-<suffix>.png`` for another ``name``);
    None when fewer than 2 tracks share at least 2 agents. The CLI keeps surrogate tracks apart
    (``name="SUMMARY-surrogate"``): a predicted board never enters a summary of measured ones."""
    scores: dict[str, dict[str, float]] = {}
    for task in tasks:
        metric = get_protocol(task).metric if task in _protocols() else "hv"
        entries, _ = board_entries(task, root, validate=validate)
        rows = rank(entries, metric=metric)
        if rows:   # higher is better for the ranking across tracks
            scores[task] = {r["agent"]: -r["regret"][0] if metric == "regret" else r["hv"][0] for r in rows}
    if len(scores) < 2:
        return None
    result = stats.critical_difference(scores)
    if len(result["agents"]) < 2:
        return None
    root = Path(root)
    png = root / ("critical_difference.png" if name == "SUMMARY" else
                  f"critical_difference-{name.removeprefix('SUMMARY-')}.png")
    stats.cd_plot(result, png)
    labelled = [f"{t} ({get_protocol(t).backend})" if t in _protocols() else t for t in scores]
    lines = [f"# Across tracks{' (SURROGATE: predicted numbers)' if 'surrogate' in name else ''}", "",
             f"Average rank of each agent over {result['tasks']} tracks ({', '.join(labelled)}), by each track's "
             f"ranking metric (mean test HV; mean regret on table tracks); Friedman test and Nemenyi critical "
             f"difference (α = {ALPHA}).", "",
             "| agent | average rank |", "|---|---|"]
    lines += [f"| {a} | {result['avg_rank'][a]:.2f} |" for a in result["agents"]]
    p = result["p"]
    friedman = (f"Friedman χ² = {result['chi2']:.3f}, p = {p:.3g}. " if p is not None
                else "Friedman test: needs at least 3 agents. ")
    lines += ["", friedman + f"CD = {result['cd']:.2f}: agents whose average ranks differ by less are not "
              "distinguishable.", "", f"![critical difference]({png.name})", ""]
    (root / f"{name}.md").write_text("\n".join(lines))
    return {**result, "plot": png, "scores": scores}


def _protocols():
    from agents.leaderboard.protocol import PROTOCOLS

    return PROTOCOLS


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
