"""``automc search``: run one agent on one task under a budget, with progress, saving and resume.

The result JSON is rewritten atomically after every new evaluation, so an interrupted search (Ctrl-C,
kill) loses nothing; ``--resume`` loads it and re-runs the same seeded search, whose finished
evaluations replay from the evaluation store for free, so it continues where it stopped.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from agents.base import Budget, Evaluation, Evaluator, SearchResult

# name -> "module:Class"; imported on use so that one agent's heavy dependency never slows another.
AGENTS: dict[str, str] = {
    "random": "agents.random_search:RandomSearch",
    "tpe": "agents.random_search:TPESearch",
    "nsga2": "agents.evolution:NSGA2Search",
    "rvea": "agents.evolution:RVEASearch",
    "ppo-mask": "agents.rl:MaskablePPOAgent",
    "ppo": "agents.rl:PPOAgent",
    "rl": "agents.rl:ReinforceAgent",
    "automc": "agents.automc:AutoMCAgent",
    # the AutoMC agent's ablations (its VARIANTS), named so that a board ranks them as agents of their own
    "automc-no_kg": "agents.automc:AutoMCAgent",
    "automc-no_exp": "agents.automc:AutoMCAgent",
    "automc-legr_only": "agents.automc:AutoMCAgent",
    "automc-non_progressive": "agents.automc:AutoMCAgent",
}
#: registered names that are another agent with some options fixed: the name is the configuration, so a
#: result file's ``agent`` says which ablation ran, and the validator's re-run rebuilds the same one
PRESETS: dict[str, dict] = {
    "automc-no_kg": {"variant": "no_kg"},
    "automc-no_exp": {"variant": "no_exp"},
    "automc-legr_only": {"variant": "legr_only"},
    "automc-non_progressive": {"variant": "non_progressive"},
}


def available_agents() -> list[str]:
    """Agents whose module is present in this installation."""
    found = []
    for name, target in AGENTS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def make_agent(name: str, **options):
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(AGENTS)}")
    module, cls = AGENTS[name].split(":")
    try:
        agent_cls = getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as e:
        raise ValueError(f"agent {name!r} is not available in this installation ({e})") from e
    preset = PRESETS.get(name, {})
    clash = sorted(k for k in preset if k in options and options[k] != preset[k])
    if clash:
        raise ValueError(f"agent {name!r} is {AGENTS[name]} with {preset}; options {clash} cannot change that")
    agent = agent_cls(**{**options, **preset})
    if preset:   # its evaluations and result file carry the preset's name, not the base agent's
        agent.name = name
    return agent


def _json_safe(options: dict) -> dict:
    """Options as they can be written to a result file (arrays and objects by their type name)."""
    safe = {}
    for key, value in options.items():
        try:
            json.dumps(value, allow_nan=False)
            safe[key] = value
        except (TypeError, ValueError):
            safe[key] = f"<{type(value).__name__}>"
    return safe


def rerunnable(options: dict) -> bool:
    """Whether ``options`` survive a JSON round trip unchanged, so the search can be re-run from a result file."""
    try:
        return json.loads(json.dumps(options, allow_nan=False)) == options
    except (TypeError, ValueError):
        return False


def write_json_atomic(data: dict, path: Path, allow_nan: bool = True) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=allow_nan))
    os.replace(tmp, path)


def save_atomic(result: SearchResult, path: Path) -> None:
    write_json_atomic(result.to_json(), path)


def run_search(env, agent_name: str, budget: Budget, seed: int, out: str | Path | None = None,
               resume: bool = False, progress: bool = True, **agent_options) -> SearchResult:
    out = Path(out) if out else None
    previous = None
    if resume and out is None:
        raise ValueError("--resume needs the result file to continue (--out)")
    if resume and not out.exists():
        # killed before its first result was written: the same seeded search from the start replays
        # every step that finished from the store, so nothing is recomputed
        if progress:
            print(f"{out} does not exist yet: starting the search (finished steps replay from the store)",
                  file=sys.stderr)
    elif resume:
        previous = SearchResult.load(out)
        if previous.agent != agent_name or previous.seed != seed or previous.task != env.unwrapped.task.name:
            raise ValueError(f"{out} holds agent {previous.agent!r}, seed {previous.seed}, task {previous.task!r}; "
                             f"it cannot resume agent {agent_name!r}, seed {seed}, task {env.unwrapped.task.name!r}")
        previous.meta.setdefault("resumed", []).append(time.time())
    agent = make_agent(agent_name, **agent_options)
    bar = tqdm(total=budget.executions, desc=f"{agent_name} on {env.unwrapped.task.name}", unit="exec",
               disable=None if progress else True)
    gamma = env.unwrapped.task.gamma

    last = {"bar": 0.0, "save": 0.0}

    def listen(evaluation: Evaluation, evaluator: Evaluator) -> None:
        # Throttled: on the data backends a search makes thousands of evaluations a second, and the bar's
        # front and a rewrite of the whole file after each would cost more than the search. A live step
        # takes seconds, so there every evaluation is still saved as it happens.
        result, now = evaluator.result, time.monotonic()
        if not bar.disable and now - last["bar"] >= BAR_EVERY:
            last["bar"] = now
            bar.n = evaluator.executions
            best = result.best(gamma)
            bar.set_postfix(best_acc=f"{best.acc:.2f}" if best else "-", pareto=len(result.pareto(gamma)),
                            compute=f"{evaluator.compute:.0f}s")
            bar.refresh()
        if out is not None and now - last["save"] >= SAVE_EVERY:
            last["save"] = now
            save_atomic(result, out)

    Evaluator.listener = listen
    try:
        result = agent.search(env, budget, seed, result=previous)
    finally:
        Evaluator.listener = None
        bar.close()
    result.meta["agent_options"] = {**result.meta.get("agent_options", {}), **_json_safe(agent_options)}
    # what the agent was built with: a validator re-runs the seeded search from exactly this
    result.meta["agent_config"] = _json_safe(agent_options)
    result.meta["rerunnable"] = rerunnable(agent_options)
    if out is not None:
        save_atomic(result, out)
    return result


BAR_EVERY = 0.5    # seconds between progress-bar updates
SAVE_EVERY = 1.0   # seconds between rewrites of the search file (and once at the end)


def pareto_table(result: SearchResult) -> str:
    front = result.pareto()
    if not front:
        return f"no scheme reached PR ≥ γ = {result.gamma} ({len(result.evaluations)} schemes evaluated)"
    lines = [f"{'acc %':>7} {'AR':>7} {'PR':>6} {'FR':>6}  scheme"]
    for e in front:
        lines.append(f"{e.acc:>7.2f} {e.AR:>+7.3f} {e.PR:>6.3f} {e.FR:>6.3f}  {' -> '.join(e.names)}")
    return "\n".join(lines)


def plot_pareto(results: list[SearchResult], path: str | Path) -> None:
    """PNG of every evaluated scheme (grey) and each result's Pareto front (PR ≥ γ) in (PR, accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in results:
        ax.scatter([e.PR for e in r.evaluations], [e.acc for e in r.evaluations], s=8, color="0.75")
        front = r.pareto()
        ax.plot([e.PR for e in front], [e.acc for e in front], marker="o", label=f"{r.agent} (seed {r.seed})")
    if results:
        ax.axvline(results[0].gamma, color="k", lw=0.8, ls="--", label="γ")
    ax.set_xlabel("parameter reduction rate PR")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Pareto fronts on {results[0].task}" if results else "Pareto fronts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
