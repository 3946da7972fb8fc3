"""The benchmark protocol per task: budget, seeds, hypervolume reference, replay rules, agent settings.

Everything here is published in ``leaderboards/README.md`` (``automc leaderboard protocol`` prints it
from this code). What a reader looks for:

* **budget**: per search (agent, seed); ``compute`` is in reference seconds of deterministic step
  cost (:mod:`automc_env.cost`), so a budget buys the same steps on any machine.
* **hypervolume reference**: derived from the base model: the accuracy the base model reaches on
  the same split minus ``hv_tolerance`` points, and PR = γ. A scheme more than ``hv_tolerance``
  points below the uncompressed model, or below the target γ, adds nothing: those are schemes no
  user would deploy, and with the old reference (0 % accuracy) a 12 % accurate scheme still added
  area and moving the reference changed the leader.
* **replay**: CPU tasks replay the whole trajectory bit for bit at the recorded torch thread count;
  GPU tasks (non-deterministic kernels) replay the final set within ``acc_band`` / ``pr_band``.
* **agent settings per budget**: :func:`agent_settings` derives every built-in agent's options from
  the number of executions the budget buys (``expected_executions``: the compute budget over the
  mean step cost measured on random steps of the task), so that each agent acts as itself at the
  protocol's budget (PPO updates its policy, TPE leaves its start-up trials, RVEA leaves generation
  0, AutoMC runs rounds). The rule looks only at the budget and the task's step cost, never at any
  agent's results or the reported split.
* **tracks**: a protocol is a *track*: (task, backend, environment options, budget, seeds, agents).
  The task's own track (``digits``) runs the live backend; ``digits-surrogate`` runs the surrogate
  backend at a budget of thousands of executions (predicted numbers, always labelled as such) and
  ``digits-table`` runs the table backend on the data set's exhaustive sub-grid (``actions="paper-12"``,
  ``max_len=3``), where every reachable scheme is a real result, so a search is also scored by its
  **regret to the known Pareto front** (``metric="regret"``). Result files live under
  ``leaderboards/<track>/`` and record their track, backend and benchmark version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from agents.base import Budget

SCHEMA_ID = "automc-leaderboard/2"
PR_LEVELS = (0.4, 0.7)        # the paper reports schemes at about 40 % and 70 % parameter reduction
HV_TOLERANCE = 5.0            # points of accuracy below the base model that still count (the reference)
HV_TOLERANCE_FACTORS = (0.4, 1.0, 2.0)    # x the task's tolerance: the board shows the ranking under each
ALPHA = 0.05                  # family-wise error rate of the pairwise tests (Holm)
BENCH_THREADS = 1             # torch threads of a bench search (and of its replay)
SCHEME_LENGTH = 4.6           # steps of a scheme drawn uniformly under the planned-removal cap (simulated; L = 5)
# the built-in agents, and the AutoMC agent's ablations registered as agents of their own (agents.runner.PRESETS)
BUILTIN_AGENTS = ("random", "tpe", "nsga2", "rvea", "ppo-mask", "ppo", "rl", "automc")
ABLATION_AGENTS = ("automc-no_kg", "automc-no_exp", "automc-legr_only", "automc-non_progressive")
METRICS = ("hv", "regret")    # what a track ranks: test HV (higher is better) or regret to the true front (lower)


@dataclass(frozen=True)
class Protocol:
    """What a leaderboard entry on one track must follow (published in leaderboards/README.md).

    A track is a task answered by one backend with fixed environment options; the task's own track
    (``track`` left empty: named after the task) is the live one. ``metric="regret"`` (table tracks,
    whose reachable space is completely in the table) ranks by regret to the true Pareto front."""

    task: str
    budget: Budget            # per search (agent, seed)
    seeds: int                # searches per agent: seeds 0 .. seeds-1
    step_cost: float          # mean cost (reference s) of a step an agent pays: sizes the agents' settings
    gpu: bool                 # needs a GPU: replay the final set within the bands instead of everything exactly
    acc_band: float = 1.0     # GPU replay: accuracy (val and test, points) within this
    pr_band: float = 0.01     # GPU replay: PR within this
    note: str = ""
    env_seed: int = 0         # the environment seed (base model, data sample); fixed for the board
    grid: str = "paper"
    hv_tolerance: float = HV_TOLERANCE
    track: str = ""           # the board's name and folder (default: the task)
    backend: str = "live"     # live | table | surrogate (automc_env.backends)
    env_options: tuple = ()   # further AutoMCEnv kwargs as (key, value) pairs, e.g. (("max_len", 3),)
    agents: tuple[str, ...] = BUILTIN_AGENTS    # what `automc bench` runs by default on this track
    metric: str = "hv"

    def __post_init__(self):
        if not self.track:
            object.__setattr__(self, "track", self.task)
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "regret" and self.backend != "table":
            raise ValueError("regret needs the whole reachable space in a table: backend='table'")
        if self.gpu and self.backend != "live":
            raise ValueError("a data backend answers on the CPU: gpu=True needs backend='live'")

    @property
    def env_kwargs(self) -> dict:
        """The environment options as a result file records them (JSON: tuples become lists)."""
        import json

        return json.loads(json.dumps(dict(self.env_options)))

    @property
    def surrogate(self) -> bool:
        return self.backend == "surrogate"

    def make_env(self, store=False, device: str = "cpu", progress: bool = False):
        """The track's environment. Data backends get no store (``store=False``): a table answers from
        the released data set only, so the bench and the validator see the same table."""
        from automc_env.env import AutoMCEnv

        if self.backend != "live":
            store = False
        return AutoMCEnv(task=self.task, grid=self.grid, seed=self.env_seed, store=store, device=device,
                         progress=progress, backend=self.backend, **self.env_kwargs)

    @property
    def gamma(self) -> float:
        from automc_env.tasks import get_task

        return get_task(self.task).gamma

    @property
    def expected_executions(self) -> int:
        """Executions the budget buys: the compute limit over the mean step cost, capped by the executions limit."""
        caps = []
        if self.budget.compute is not None:
            caps.append(int(self.budget.compute / self.step_cost))
        if self.budget.executions is not None:
            caps.append(self.budget.executions)
        return max(1, min(caps))

    @property
    def hv_tolerances(self) -> tuple[float, ...]:
        """The references the board compares (digits: 2, 5 and 10 points below the base model)."""
        return tuple(round(f * self.hv_tolerance, 6) for f in HV_TOLERANCE_FACTORS)

    @property
    def agent_settings(self) -> dict[str, dict]:
        return agent_settings(self.expected_executions)

    @property
    def replay(self) -> str:
        return "final set within the bands" if self.gpu else "every evaluation, exactly"

    def to_json(self) -> dict:
        return {"task": self.task, "track": self.track, "backend": self.backend, "env_kwargs": self.env_kwargs,
                "budget": asdict(self.budget), "seeds": self.seeds, "gamma": self.gamma,
                "hv_tolerance": self.hv_tolerance, "env_seed": self.env_seed, "grid": self.grid,
                "search_split": "val", "report_split": "test", "gpu": self.gpu, "metric": self.metric,
                "acc_band": self.acc_band if self.gpu else 0.0, "pr_band": self.pr_band if self.gpu else 0.0}


def agent_settings(expected_executions: int) -> dict[str, dict]:
    """Options of every built-in agent for a budget of about ``expected_executions`` executions.

    With E executions and S = E / 4.6 schemes (the mean length of a scheme drawn uniformly step by
    step under the 0.85 planned-removal cap; END is 1 choice in ~4,500): TPE starts with S/4 random
    trials (TPE proper for three quarters of the search; Optuna's default 10 at most); NSGA-II and
    RVEA use a population of S/4 (about 4 generations; the paper's 50 at most), and RVEA's penalty
    schedule and reference adaptation run over 3x the expected generations (its default 10,000 would
    keep the APD penalty at 0); PPO collects rollouts of E/8 steps (at least 8 updates; SB3-contrib's
    32 at most); AutoMC evaluates E/10 pairs per round (at least 10 rounds; the paper's 10 at most).
    ``random`` and ``rl`` (one update per scheme) need nothing. The AutoMC ablations get AutoMC's
    settings (``non_progressive`` is an RL controller with one update per scheme, like ``rl``: defaults).
    """
    e = max(1, int(expected_executions))
    schemes = max(1.0, e / SCHEME_LENGTH)
    population = max(2, min(50, int(schemes // 4)))
    generations = max(1, math.ceil(schemes / population))
    n_steps = max(4, min(32, 2 ** int(math.log2(max(e / 8, 1)))))
    ppo = {"n_steps": n_steps, "batch_size": max(2, n_steps // 2)}
    return {
        "random": {},
        "tpe": {"n_startup_trials": max(1, min(10, round(schemes / 4)))},
        "nsga2": {"population": population},
        "rvea": {"population": population, "max_generations": max(4, 3 * generations)},
        "ppo-mask": dict(ppo),
        "ppo": dict(ppo),
        "rl": {},
        "automc": {"optimal_num": max(2, min(10, e // 10))},
        "automc-no_kg": {"optimal_num": max(2, min(10, e // 10))},
        "automc-no_exp": {"optimal_num": max(2, min(10, e // 10))},
        "automc-legr_only": {"optimal_num": max(2, min(10, e // 10))},
        "automc-non_progressive": {},
    }


_GPU_DAY = 86400.0
PROTOCOLS: dict[str, Protocol] = {p.track: p for p in [
    # step costs: digits 4.3 = the data set's per-method mean costs (collect --design stratified: 197
    # steps of version 1; the 540 of version 2 give 4.37) weighted by each method's share of the grid,
    # which is what a uniform agent draws;
    # digits-vgg scaled by its calibrated coefficients (~0.77 of ResNet-8's); GPU tasks: nominal
    # (uncalibrated, like their cost rows), the executions limit binds first anyway
    Protocol("digits", Budget(executions=400, compute=500.0), seeds=5, step_cost=4.3, gpu=False,
             note="CPU board: ResNet-8 on the bundled digits; a search is ~500 reference seconds"),
    Protocol("digits-vgg", Budget(executions=400, compute=500.0), seeds=5, step_cost=3.3, gpu=False,
             note="CPU board: a small VGG on the bundled digits"),
    Protocol("resnet56-cifar10-mini", Budget(executions=1500, compute=_GPU_DAY), seeds=5, step_cost=60.0,
             gpu=True, note="paper Exp1 search task; one GPU day per search (the paper gave AutoMC 3)"),
    Protocol("vgg16-cifar100-mini", Budget(executions=1500, compute=_GPU_DAY), seeds=5, step_cost=60.0,
             gpu=True, note="paper Exp2 search task; one GPU day per search (the paper gave AutoMC 3)"),
    # a 4-epoch toy whose steps lose tens of points: at 5 points no scheme would ever count
    Protocol("synthetic", Budget(executions=40, compute=10.0), seeds=2, step_cost=0.5, gpu=False,
             hv_tolerance=25.0, note="for tests and trying the harness: seconds per search"),
    # data-backed tracks: cheap and exactly replayable, so many executions and 20 seeds per agent.
    # Surrogate: 1,000 executions at the live digits step cost (4.3: the surrogate predicts the real
    # costs), enough for every agent's settings to reach the paper's values (population 50, 10 pairs per
    # round, rollouts of 32); the numbers are predictions and the board says so on every line.
    Protocol("digits", Budget(executions=1000, compute=1000 * 4.3), seeds=20, step_cost=4.3, gpu=False,
             track="digits-surrogate", backend="surrogate", agents=BUILTIN_AGENTS + ABLATION_AGENTS,
             note="surrogate backend: predicted numbers; 1,000 executions per search"),
    # Table: the data set's exhaustive sub-grid (12 strategies, depth <= 3: 1,668 schemes, all real once
    # collected). 200 executions (~12 % of the sub-grid) leave the known front something to find; step
    # cost 3.2 = the mean of the sub-grid's 1,668 real steps (3.23; 3.26, 3.26, 3.21 at depths 1-3)
    Protocol("digits", Budget(executions=200, compute=200 * 3.2), seeds=20, step_cost=3.2, gpu=False,
             track="digits-table", backend="table", env_options=(("actions", "paper-12"), ("max_len", 3)),
             agents=BUILTIN_AGENTS + ABLATION_AGENTS, metric="regret",
             note="table backend on the exhaustive paper-12 sub-grid (depth <= 3): real results, regret to the "
                  "known front"),
]}
TRACK_BACKENDS = ("live", "surrogate", "table")


def track_name(task: str, track: str | None = None) -> str:
    """The track of ``task`` answered by backend ``track`` (``None``/``"live"``: the task's own track);
    a track name passed as ``task`` is returned as it is (``--task digits-surrogate``)."""
    if not track or track == "live":
        return task
    if track not in TRACK_BACKENDS:
        raise ValueError(f"unknown track {track!r}; tracks per task: {', '.join(TRACK_BACKENDS)}")
    return f"{task}-{track}"


def get_protocol(track: str) -> Protocol:
    """The protocol of a track (a task's name is its live track)."""
    if track not in PROTOCOLS:
        raise ValueError(f"no leaderboard protocol for track {track!r}; protocols exist for: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[track]


def track_of(entry: dict) -> str:
    """The track a result file claims (files without one are their task's live track)."""
    return entry.get("track") or entry["task"]


def protocol_table() -> str:
    """The track table of leaderboards/README.md, from the code."""
    lines = ["| track | task | backend | environment | γ | budget per search | ≈ executions | seeds | agents | "
             "ranked by | HV reference | replay | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in PROTOCOLS.values():
        budget = ", ".join(f"{k}={v:g}" for k, v in asdict(p.budget).items() if v is not None)
        replay = f"final set, ±{p.acc_band} pp, ±{p.pr_band} PR" if p.gpu else "every evaluation, exact"
        env = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in p.env_options) or "defaults"
        agents = (f"{len(p.agents)} (built-ins + AutoMC ablations)" if set(ABLATION_AGENTS) <= set(p.agents)
                  else f"{len(p.agents)} built-ins" if set(p.agents) == set(BUILTIN_AGENTS) else ", ".join(p.agents))
        metric = ("regret to the true front (val HV)" if p.metric == "regret"
                  else "HV (test), surrogate-predicted" if p.surrogate else "HV (test)")
        if p.backend != "live":
            replay += f" ({p.backend})"
        lines.append(f"| `{p.track}` | `{p.task}` | {p.backend} | {env} | {p.gamma} | {budget} | "
                     f"{p.expected_executions} | {p.seeds} | {agents} | {metric} | "
                     f"(base acc − {p.hv_tolerance:g} pp, PR = γ) | {replay} | {'GPU' if p.gpu else 'CPU'} |")
    return "\n".join(lines)


def settings_table() -> str:
    """Each built-in agent's options per track (what ``automc bench`` applies by default)."""
    agents = list(agent_settings(1))
    lines = ["| agent | " + " | ".join(f"`{t}`" for t in PROTOCOLS) + " |", "|---" * (len(PROTOCOLS) + 1) + "|"]
    for a in agents:
        cells = []
        for p in PROTOCOLS.values():
            opts = p.agent_settings[a]
            cells.append(", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults")
        lines.append(f"| `{a}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
