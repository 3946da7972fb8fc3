"""CPU smoke run of the paper tasks' code path: every method on ResNet-56 / VGG-16-BN at CIFAR shapes.

``resnet56-cifar10-mini`` and ``vgg16-cifar100-mini`` need CIFAR (a download) and a GPU (E_pre = 50
epochs of pre-training, several epochs per step). This script is the closest check without either:
it writes a small, learnable CIFAR-format folder (``data.write_synthetic_cifar``: the real
python-pickle layout, 3x32x32 images, 10 / 100 classes) and runs the real tasks on it — the same
architectures, 10 % per-class mini split, pad-4 crop + flip, batch size and learning rates — with
only E_pre cut to ``--epochs`` (``tasks.with_options``). Then it applies one paper-grid strategy per
method to the pre-trained base model, and two-step schemes that chain methods (factorised, pruned
and distilled models fed to another method: where chaining bugs hide), and prints what each step
achieved and cost. Accuracies say nothing about CIFAR; what counts is that every step runs at these
shapes, hits its parameter target and chains.

Default ``--epochs 10``: the grid's epoch hyperparameters are ``int(n · E_pre)`` epochs and their
smallest values are 0.1 (``ft``, SFP's ``soft``), so 10 is the smallest E_pre at which every stage of
the chosen strategies still trains (1 epoch of ``ft``/``soft``, 3 of HOS's ``aux``, 4 LeGR candidates
of 1 epoch, 0.6 epoch of SFP's final fine-tune); below 10 those stages train 0 epochs and their code
is skipped. With the default data a mini-split epoch is 2 batches of 64 (CIFAR-10: 100 images;
CIFAR-100: 200 images), so a step trains a handful of batches.

So few batches leave the ResNet-56 base model at chance in eval mode (its BN running statistics have
seen 20 batches; measured on the default data: 10 % val after 10 epochs, 30 % after 50; VGG-16-BN:
19 % and 90 % on 100 classes), and then the accuracy columns say nothing. ``--base-epochs P`` pre-trains
the base model for P epochs instead (same recipe and code, ``pretrain.load_base`` on the task with
E_pre = P) and hands it to the environment as its ``checkpoint``, while the steps keep E_pre =
``--epochs``; the default is the environment's own pre-training on first use (E_pre = ``--epochs``).

Everything goes under a scratch ``AUTOMC_HOME`` (``--home``, default a temporary directory removed
at the end), one sub-folder per task and data configuration: the synthetic folder must never
shadow a real CIFAR folder, nor may base models pre-trained on it land in a real cache.

Usage: python benchmarks/paper_tasks.py [--tasks resnet56-cifar10-mini,vgg16-cifar100-mini]
       [--methods LMA,LeGR,NS,SFP,HOS,LFB] [--chains 'HOS>NS,LFB>LeGR,...'] [--epochs 10]
       [--base-epochs P] [--threads 1] [--home DIR] [--markdown]
Exit code 1 if any step (or a task's set-up) failed; each failure's traceback tail is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from automc_env import data as D
from automc_env.env import AutoMCEnv
from automc_env.pretrain import load_base
from automc_env.space import METHODS, get_space
from automc_env.tasks import get_task, with_options

PAPER_TASKS = ("resnet56-cifar10-mini", "vgg16-cifar100-mini")

# One paper-grid strategy per method: dec = 0.2 (two steps remove 0.4, well under the 0.85 cap)
# and the smallest epoch settings (ft / soft = 0.1, evo = 0.4, aux = 0.3), others as in
# benchmarks/methods.py.
STRATEGIES = {
    "LMA": {"ft": 0.1, "dec": 0.2, "seg": 8, "T": 3, "alpha": 0.5},
    "LeGR": {"ft": 0.1, "dec": 0.2, "max_prune": 0.9, "evo": 0.4, "crit": "l2_bn"},
    "NS": {"ft": 0.1, "dec": 0.2, "max_prune": 0.9},
    "SFP": {"dec": 0.2, "soft": 0.1, "every": 1},
    "HOS": {"ft": 0.1, "dec": 0.2, "layer": "P2", "filter": "k34", "aux": 0.3, "mse_weight": 1},
    "LFB": {"ft": 0.1, "dec": 0.2, "factor": 1, "loss": "CE"},
}

# Two-step schemes: every method once first and once second; Tucker-2 / basis-factorised convs
# (HOS, LFB), pruned nets (NS, SFP, LeGR) and an LMA student (custom activations) each fed to
# another method.
CHAINS = "HOS>NS,LFB>LeGR,LMA>SFP,NS>HOS,SFP>LFB,LeGR>LMA"

# Synthetic images per class (train, test). The 10 % mini split must keep >= 2 of every class in
# train (LeGR holds one of each class out for its fitness) and >= 1 in val.
DATA = {"cifar10": (100, 50), "cifar100": (20, 2)}


@dataclass
class Row:
    methods: list[str]
    names: list[str]
    requested: float
    steps: list[dict] = field(default_factory=list)
    wall: float = 0.0
    error: str | None = None    # the exception's last traceback lines
    skipped: str | None = None  # why a chain was not run

    def status(self) -> str:
        if self.skipped:
            return f"SKIPPED ({self.skipped})"
        return "OK" if self.error is None else "FAILED: " + self.error.strip().splitlines()[-1]


@dataclass
class TaskRun:
    task: str
    base: dict | None = None
    setup_seconds: float = 0.0
    setup_error: str | None = None
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


def failure_text(exc: BaseException, lines: int) -> str:
    """The wrapper's message plus the last ``lines`` lines of the innermost cause's traceback."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    tail = "".join(traceback.format_exception(root)).rstrip().splitlines()[-lines:]
    head = [f"{type(exc).__name__}: {exc}"] if root is not exc else []
    return "\n".join(head + tail)


def run_task(name: str, args: argparse.Namespace, methods: list[str], chains: list[list[str]]) -> TaskRun:
    run = TaskRun(name)
    started = time.perf_counter()
    task = with_options(get_task(name), pretrain_epochs=args.epochs)
    n_train, n_test = DATA[task.dataset]
    home = args.home / f"{name}-{n_train}x{n_test}-seed{args.seed}"  # pre-trained models: keyed by E_pre
    os.environ["AUTOMC_HOME"] = str(home)
    os.environ["AUTOMC_DATA"] = str(home / "data")
    try:
        D.write_synthetic_cifar(home / "data", task.dataset, n_train, n_test, seed=args.seed)
        base_epochs = args.base_epochs or args.epochs
        print(f"[{name}] pre-training {task.model} for {base_epochs} epochs on synthetic {task.dataset} "
              f"({n_train}/{n_test} train/test images per class) ...", flush=True)
        checkpoint = None
        if base_epochs != args.epochs:
            base_task = with_options(task, pretrain_epochs=base_epochs)  # cached under AUTOMC_HOME
            checkpoint = load_base(base_task, base_task.load_data(args.device, seed=args.seed), args.seed,
                                   torch.device(args.device), progress=args.progress).path
        env = AutoMCEnv(task=task, store=False, device=args.device, seed=args.seed, progress=args.progress,
                        checkpoint=checkpoint)
    except Exception as e:  # noqa: BLE001 - reported, and the next task still runs
        run.setup_error = failure_text(e, args.tb_lines)
        run.setup_seconds = run.seconds = time.perf_counter() - started
        print(f"[{name}] set-up FAILED\n{run.setup_error}", flush=True)
        return run
    run.base, run.setup_seconds = env.base, time.perf_counter() - started
    print(f"[{name}] base model: {env.base['params']:,} params, {env.base['flops'] / 1e6:.1f} MMACs, "
          f"val acc {env.base['acc']:.2f} % on {len(env.data.val)} images; train split "
          f"{len(env.data.train)} images; set-up {run.setup_seconds:.1f} s", flush=True)

    space = get_space("paper")
    ids = {m: space.id_of(m, STRATEGIES[m]) for m in methods}
    failed: set[str] = set()
    for scheme in [[m] for m in methods] + chains:
        sids = [ids[m] for m in scheme]
        row = Row(scheme, [space[i].name for i in sids], sum(space[i].removal(task.gamma) for i in sids))
        run.rows.append(row)
        if len(scheme) > 1 and failed & set(scheme[:-1]):
            row.skipped = f"{', '.join(sorted(failed & set(scheme[:-1])))} failed alone"
        else:
            t0 = time.perf_counter()
            try:
                row.steps = env.evaluate(sids)
            except Exception as e:  # noqa: BLE001 - reported, and the next strategy still runs
                row.error = failure_text(e, args.tb_lines)
                if len(scheme) == 1:
                    failed.add(scheme[0])
            row.wall = time.perf_counter() - t0
        print(f"[{name}] {' > '.join(row.names)}: {describe(row, env.base)}", flush=True)
        if row.error:
            print(indent(row.error), flush=True)
    run.seconds = time.perf_counter() - started
    return run


def describe(row: Row, base: dict) -> str:
    if not row.steps:
        return row.status()
    last = row.steps[-1]
    accs = " -> ".join(f"{a:.2f}" for a in [base["acc"]] + [s["acc"] for s in row.steps])
    secs = " + ".join(f"{s['seconds']:.1f}" for s in row.steps)
    return (f"PR {row.requested:.2f} -> {last['PR']:.3f}, FR {last['FR']:.3f}, acc {accs}, "
            f"s/step {secs}, wall {row.wall:.1f} s, {row.status()}")


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def print_table(run: TaskRun, markdown: bool) -> None:
    """One row per scheme: s/step lists every step's compute seconds (earlier steps replayed from the
    private store, with the seconds recorded when they were computed); wall is this row's own time."""
    head = f"task {run.task} (synthetic data), set-up incl. pre-training {run.setup_seconds:.1f} s"
    if run.base:
        head += (f"; base model {run.base['params']:,} params, {run.base['flops'] / 1e6:.1f} MMACs, "
                 f"val acc {run.base['acc']:.2f} %")
    head += f"; task total {run.seconds:.1f} s"
    print(("\n**" + head + "**\n") if markdown else ("\n" + head))
    if run.setup_error:
        print(("```\n" + run.setup_error + "\n```") if markdown else indent(run.setup_error))
        return
    arrow = "→" if markdown else "->"
    cols = ["method", "strategy", "PR req", "PR got", "FR", f"acc before {arrow} after (%)", "s / step", "wall s",
            "status"]
    table = []
    for r in run.rows:
        steps = r.steps
        accs = f" {arrow} ".join(f"{a:.2f}" for a in [run.base["acc"]] + [s["acc"] for s in steps]) if steps else "-"
        table.append([
            " > ".join(r.methods), " > ".join(f"`{n}`" if markdown else n for n in r.names),
            f"{r.requested:.2f}", f"{steps[-1]['PR']:.3f}" if steps else "-",
            f"{steps[-1]['FR']:.3f}" if steps else "-", accs,
            " + ".join(f"{s['seconds']:.1f}" for s in steps) if steps else "-",
            f"{r.wall:.1f}" if not r.skipped else "-", r.status().replace("|", "\\|") if markdown else r.status()])
    if markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for t in table:
            print("| " + " | ".join(t) + " |")
        return
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(PAPER_TASKS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--chains", default=CHAINS,
                   help="two- (or more-) step schemes as A>B, comma-separated; '' for none. A chain runs "
                        "only if all its methods are in --methods")
    p.add_argument("--epochs", type=int, default=10, help="E_pre of the tasks (paper: 50); see above")
    p.add_argument("--base-epochs", type=int, default=None,
                   help="pre-train the base model this many epochs (default: --epochs, the env's own pre-training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--home", type=Path, default=None, help="scratch AUTOMC_HOME (default: a temporary dir)")
    p.add_argument("--tb-lines", type=int, default=12, help="traceback lines printed per failure")
    p.add_argument("--progress", action="store_true", help="progress bars for every training stage")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    tasks = [t for t in args.tasks.split(",") if t]
    for t in tasks:
        task = get_task(t)
        if task.dataset not in DATA:
            p.error(f"task {t} is not a CIFAR task (dataset {task.dataset})")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in STRATEGIES]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(STRATEGIES)}")
    chains = [c.split(">") for c in args.chains.split(",") if c]
    bad = [c for c in chains if len(c) < 2 or any(m not in STRATEGIES for m in c)]
    if bad:
        p.error(f"chains must be two or more methods joined by '>', got {['>'.join(c) for c in bad]}")
    chains = [c for c in chains if all(m in methods for m in c)]
    if args.epochs < 1 or (args.base_epochs is not None and args.base_epochs < 1):
        p.error("--epochs and --base-epochs must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    temporary = args.home is None
    args.home = Path(tempfile.mkdtemp(prefix="automc-paper-tasks-")) if temporary else args.home.resolve()
    started = time.perf_counter()
    try:
        runs = [run_task(t, args, methods, chains) for t in tasks]
    finally:
        if temporary:
            shutil.rmtree(args.home, ignore_errors=True)
    total = time.perf_counter() - started

    for run in runs:
        print_table(run, args.markdown)
    failures = [(run.task, "set-up", run.setup_error) for run in runs if run.setup_error]
    failures += [(run.task, " > ".join(r.names), r.error) for run in runs for r in run.rows if r.error]
    skipped = sum(1 for run in runs for r in run.rows if r.skipped)
    steps = sum(len(r.steps) for run in runs for r in run.rows)
    print(f"\n{len(tasks)} task(s), {steps} step results, {len(failures)} failure(s), {skipped} skipped; "
          f"E_pre {args.epochs} (base model {args.base_epochs or args.epochs}), {torch.get_num_threads()} "
          f"thread(s), device {args.device}; total {total:.1f} s")
    for task, what, err in failures:
        print(f"\nFAILED [{task}] {what}\n{indent(err)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
