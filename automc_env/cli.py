"""The ``automc`` command: strategies, tasks, pretrain, evaluate, store."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from automc_env.space import GRIDS, METHODS, get_space
from automc_env.tasks import DEFAULT_TASK, TASKS, get_task


def _strategies(args) -> int:
    space = get_space(args.grid)
    if args.show is not None:
        s = space.parse(args.show) if not args.show.isdigit() else space[int(args.show)]
        print(json.dumps(s.to_json(), indent=2) if args.json else f"{s.id}\t{s.name}")
        return 0
    items = space.strategies(args.method)
    if args.count:
        print(len(items))
        return 0
    if args.json:
        print(json.dumps([s.to_json() for s in items]))
    else:
        for s in items:
            print(f"{s.id}\t{s.name}")
    return 0


def _tasks(args) -> int:
    if args.json:
        print(json.dumps({name: t.to_json() for name, t in TASKS.items()}, indent=2))
        return 0
    print(f"{'task':<24} {'model':<10} {'dataset':<9} {'γ':>4} {'E_pre':>5} {'batch':>5} {'search':>6} {'L':>2}  description")
    for name, t in TASKS.items():
        mark = " *" if name == DEFAULT_TASK else ""
        print(f"{name + mark:<24} {t.model:<10} {t.dataset:<9} {t.gamma:>4} {t.pretrain_epochs:>5} "
              f"{t.batch_size:>5} {t.search_fraction:>6} {t.max_len:>2}  {t.description}")
    print("\n* default task. 'search' = per-class fraction of the data the search uses.")
    return 0


def _pretrain(args) -> int:
    """Regenerate a base model, print its sha256 and say whether it is the shipped one.

    The result goes to the AUTOMC_HOME cache, never into the package; ``--write-shipped``
    (maintainers) writes the package file and its manifest entry instead. Exit status 1 when the
    regenerated weights differ from the shipped ones.
    """
    from automc_env import pretrain
    from automc_env.training import resolve_device

    task = get_task(args.task)
    device = resolve_device(args.device)
    if args.write_shipped and (device.type != "cpu" or task.needs_gpu):
        print("error: --write-shipped makes the pinned base models of CPU tasks: use --device cpu and a task "
              "that does not need a GPU", file=sys.stderr)
        return 2
    shipped = pretrain.shipped_record(task, args.seed, warn=False)
    listed = pretrain.shipped_name(task, args.seed) in pretrain.read_manifest().get("models", {})
    data = task.load_data(device, seed=args.seed, download=args.download)
    if args.write_shipped:
        model, record = pretrain.train_base(task, data, args.seed, device, progress=True)
        where = f"wrote {pretrain.write_shipped(model, record)} and {pretrain.MANIFEST}"
    else:
        base = None if args.force else pretrain.load_cached(task, args.seed, device)
        if base is not None:
            where = f"already pre-trained: {base.path} (use --force to retrain)"
        else:
            base = pretrain.pretrain(task, data, args.seed, device, progress=True)
            where = f"saved at {base.path}"
        record = base.record
    print(f"{task.name} seed {args.seed}: {task.model}, {record['params']:,} params, {record['flops']:,} MACs; "
          f"val acc {record['val_acc']:.2f} %, test acc {record['test_acc']:.2f} %; pre-trained in "
          f"{record['seconds']:.1f} s ({record['device']} {record['precision']}, {record['threads']} thread(s), "
          f"torch {record['torch']})")
    print(f"sha256 {record['sha256']}")
    print(where)
    if shipped is None:
        if args.write_shipped:
            what = "replaced one made for another task definition" if listed else "new"
            print(f"shipped base model: {what} (benchmark {record['benchmark_version']})")
        else:
            reason = ("the shipped base model was made for another task definition" if listed
                      else "no shipped base model for this task and seed")
            print(f"{reason}: the environment uses this pre-trained one (benchmark {record['benchmark_version']})")
        return 0
    diffs = pretrain.compare(record, shipped)
    name = pretrain.shipped_name(task, args.seed)
    if not diffs:
        print(f"matches the shipped base model {name} (sha256 identical, benchmark {shipped['benchmark_version']})")
        return 0
    verb = "replaced" if args.write_shipped else "DIFFERS from"
    print(f"{verb} the shipped base model {name}:")
    for line in diffs:
        print(f"  {line}")
    return 0 if args.write_shipped else 1


def parse_scheme(text: str, grid: str) -> list[int]:
    """Ids ("2022,2045") or strategy names ("NS(ft=0.3,dec=0.12,max=0.7),NS(...)")."""
    space = get_space(grid)
    tokens = re.findall(r"[A-Za-z]+\([^)]*\)|-?\d+|[^,\s]+", text)
    ids = []
    for tok in tokens:
        ids.append(int(tok) if re.fullmatch(r"-?\d+", tok) else space.parse(tok).id)
    return ids


def _evaluate(args) -> int:
    from automc_env.env import AutoMCEnv, format_table

    scheme = parse_scheme(args.scheme, args.grid)
    env = AutoMCEnv(task=args.task, grid=args.grid, seed=args.seed, device=args.device,
                    store=not args.no_store, checkpoint=args.checkpoint, progress=not args.json,
                    max_len=max(len(scheme), get_task(args.task).max_len), download=args.download)
    start = time.perf_counter()
    steps = env.evaluate(scheme, progress=not args.json)
    total = time.perf_counter() - start
    if args.json:
        print(json.dumps({"task": env.task.name, "grid": env.space.name, "seed": env.seed_value,
                          "fingerprint": env.fingerprint, "base": env.base, "steps": steps,
                          "seconds": total}, indent=2))
    else:
        print(format_table([env.base] + steps, env.space))
        cached = sum(s["cached"] for s in steps)
        print(f"\n{len(steps)} steps ({cached} from the store, marked *; s = compute seconds of the step) "
              f"in {total:.2f} s; accuracy on the task's val split ({len(env.data.val)} images); MMACs per image.")
    return 0


def _store(args) -> int:
    from automc_env.store import EvaluationStore

    store = EvaluationStore()
    if args.action == "clear":
        if not args.all and not args.fingerprint:
            print("say what to clear: --fingerprint F (a prefix is enough) or --all", file=sys.stderr)
            return 2
        targets = [None] if args.all else [f["fingerprint"] for f in store.fingerprints()
                                           if f["fingerprint"].startswith(args.fingerprint)]
        if not targets:
            print(f"no fingerprint starts with {args.fingerprint!r}", file=sys.stderr)
            return 1
        removed = sum(store.clear(fp) for fp in targets)
        print(f"removed {removed} stored steps")
        return 0
    rows = store.fingerprints()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"store at {store.root}")
    print(f"{'fingerprint':<18} {'task':<22} {'grid':<6} {'seed':>4} {'steps':>6} {'MB':>8}")
    for r in rows:
        d = r["description"] or {}
        print(f"{r['fingerprint'][:16]:<18} {d.get('task', '?'):<22} {d.get('grid', '?'):<6} "
              f"{d.get('seed', '?'):>4} {r['steps']:>6} {r['bytes'] / 1e6:>8.2f}")
    return 0


def _search(args) -> int:
    from agents.base import Budget
    from agents.runner import pareto_table, plot_pareto, run_search
    from automc_env.env import AutoMCEnv

    budget = Budget.parse(args.budget)
    options = json.loads(args.options) if args.options else {}
    if not isinstance(options, dict):
        raise ValueError("--options must be a JSON object, e.g. '{\"population\": 8}'")
    if args.backend != "live" and (args.workers or args.ray_address):
        raise ValueError(f"--workers computes real steps; backend {args.backend!r} answers from data in microseconds")
    extra = {"backend": args.backend} if args.backend != "live" else {"device": args.device, "download": args.download}
    if args.actions:
        extra["actions"] = args.actions if args.actions in ("paper-12",) else args.actions.split(";")
    env = AutoMCEnv(task=args.task, grid=args.grid, seed=args.seed, max_len=args.max_len, **extra)
    executor = None
    if args.workers or args.ray_address:  # batches (a round's pairs, a population) computed in parallel
        from agents.base import Evaluator
        from automc_env.executor import make_executor
        executor = Evaluator.executor = make_executor(args.workers, args.ray_address)
    try:
        result = run_search(env, args.agent, budget, args.seed, out=args.out, resume=args.resume, **options)
    finally:
        if executor is not None:
            executor.close()
    spent = result.spent
    failed = sum(e.failed is not None for e in result.evaluations)
    label = "" if env.backend == "live" else f" [{env.backend} backend: {'real results' if env.backend == 'table' else 'PREDICTIONS'}]"
    print(f"\n{args.agent} on {env.task.name}{label} (seed {args.seed}): {len(result.evaluations)} schemes, "
          f"{spent.get('executions', 0)} executions ({failed} failed), {spent.get('compute', 0):.1f} cost "
          f"(reference s), {spent.get('seconds', 0):.1f} s wall")
    print(f"Pareto schemes (PR ≥ γ = {env.task.gamma}; accuracy on the val split):")
    print(pareto_table(result))
    if args.out:
        print(f"result: {args.out}")
    if args.plot:
        plot_pareto([result], args.plot)
        print(f"plot: {args.plot}")
    return 0


def _bench(args) -> int:
    from agents.base import Budget
    from agents.leaderboard import get_protocol, run_bench, track_name
    from agents.runner import available_agents

    track = track_name(args.task, args.track)
    protocol = get_protocol(track)
    agents = [a for a in (args.agents.split(",") if args.agents else
                          [a for a in protocol.agents if a in available_agents()]) if a]
    if args.seeds is None:
        seeds = list(range(protocol.seeds))
    elif "," in args.seeds:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    else:
        seeds = list(range(int(args.seeds)))
    options = json.loads(args.agent_options) if args.agent_options else {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ValueError("--agent-options must map agent names to JSON objects")
    submission = json.loads(Path(args.submission).read_text()) if args.submission else None
    budget = Budget.parse(args.budget) if args.budget else None
    written = run_bench(track, agents, seeds, root=args.root, budget=budget, agent_options=options,
                        submission=submission, force=args.force, device=args.device, workers=args.workers,
                        ray_address=args.ray_address, threads=args.threads)
    label = f" ({protocol.backend} backend{': predicted numbers' if protocol.surrogate else ''})" \
        if protocol.backend != "live" else ""
    print(f"{len(written)} result files written under {Path(args.root) / track}{label}; validate with: automc "
          f"leaderboard validate {Path(args.root) / track}/*.json; then render with: automc leaderboard render "
          f"--task {track}")
    return 0


def _leaderboard(args) -> int:
    from agents import leaderboard as L

    if args.action == "protocol":
        print(L.protocol_table())
        print()
        print(L.settings_table())
        return 0
    if args.action == "schema":
        L.print_json(L.SCHEMA)
        return 0
    if args.action == "validate":
        if not args.files:
            raise ValueError("validate needs at least one result file")
        failed = 0
        for f in args.files:
            report = L.validate_file(f, progress=not args.json, record=not args.no_record)
            failed += not report["ok"]
            if args.json:
                L.print_json({"file": f, **{k: v for k, v in report.items() if k != "entry"},
                              "metrics": (report["entry"] or {}).get("metrics")})
                continue
            print(f"{f}: {'VALID' if report['ok'] else 'REJECTED'} ({report['replayed']} evaluations replayed, "
                  f"re-run: {report['rerun']})")
            for line in report["problems"]:
                print(f"  problem: {line}")
            for line in report["notes"]:
                print(f"  note: {line}")
            if report.get("record"):
                print(f"  record: {report['record']}")
        return 1 if failed else 0
    if args.action == "claims":   # the paper's claims, from the validated files (and the data set's table)
        from agents.leaderboard import claims as C

        root = Path(args.root)
        tracks = ([L.track_name(args.task, args.track)] if args.task else
                  sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in L.PROTOCOLS
                         and (p / "validation").is_dir()))
        out = {"tracks": [C.claims_on_board(t, root) for t in tracks]}
        from automc_env.backends.report import exhaustive_missing
        missing = exhaustive_missing("digits")
        out["mixing"] = {"skipped": missing} if missing else C.mixing_on_table("digits")
        if args.json:
            L.print_json(out)
            return 0
        for result in out["tracks"]:
            print(C.claims_table(result) + "\n")
        if missing:
            print(f"Claim 2 on the exhaustive table: not yet ({missing}).")
        else:
            print("Claim 2 on the exhaustive sub-grid (every scheme real; val accuracy):\n")
            print(C.mixing_table(out["mixing"]))
        return 0
    root = Path(args.root)
    tasks = ([L.track_name(args.task, args.track)] if args.task else
             sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.json"))))
    if not tasks:
        raise ValueError(f"no result files under {root}")
    for task in tasks:
        out = L.render(task, root, readme=args.readme, log=lambda m: print(m, file=sys.stderr),
                       validate=args.validate)
        print(out["table"])
        print(f"\n{out['entries']} validated result files ({len(out['excluded'])} left out); wrote "
              f"{root / task / 'README.md'} and " + ", ".join(str(p) for p in out["plots"]))
    if len(tasks) > 1:   # measured tracks (live, table) and surrogate tracks are summarised apart
        surrogate = [t for t in tasks if t in L.PROTOCOLS and L.get_protocol(t).surrogate]
        groups = (([t for t in tasks if t not in surrogate], "SUMMARY"), (surrogate, "SUMMARY-surrogate"))
        for group, name in groups:
            summary = L.summary(group, root, name=name) if len(group) > 1 else None
            if summary is not None:
                print(f"across {summary['tasks']} tracks: wrote {root / (name + '.md')} and {summary['plot']}")
    return 0


def _collect(args) -> int:
    """Append a sampling design's real steps to the task's data set (resumable; parallel on Ray)."""
    import torch

    from automc_env import dataset as ds
    from automc_env.env import AutoMCEnv
    from automc_env.executor import make_executor

    if args.design not in (*ds.DESIGNS, *ds.FROM_FILES):
        raise ValueError(f"unknown design {args.design!r}; designs: {', '.join([*ds.DESIGNS, *ds.FROM_FILES])}")
    replicate = ds.DESIGNS[args.design].replicate if args.design in ds.DESIGNS else 0
    torch.set_num_threads(args.threads)  # in-process steps run like a worker's: one thread by default
    env = AutoMCEnv(task=args.task, seed=args.seed, device=args.device, replicate=replicate,
                    store=args.store or True, progress=False)
    executor = make_executor(args.workers, args.ray_address, args.threads)
    try:
        progress = ds.collect(env, args.design, executor, seed=args.sample_seed, root=args.out,
                              max_records=args.steps, hours=args.hours, chunk=args.chunk,
                              trajectories=args.sources or (),
                              log=lambda m: print(time.strftime("%H:%M:%S ") + m, flush=True))
    finally:
        executor.close()
    state = "design complete" if progress.finished else f"stopped before scheme {progress.next_index}"
    print(f"{progress.design}: {progress.records} records ({progress.new} new, {progress.computed} steps computed) "
          f"in {progress.seconds / 60:.1f} min; {state}; data in {ds.dataset_dir(env.task.name, args.out)}")
    return 0


def _dataset(args) -> int:
    """Counts per design of the shipped (or given) data set."""
    from automc_env import dataset as ds

    records = ds.load_records(args.task, root=args.root, include_failed=True)
    by: dict = {}
    for r in records:
        d = by.setdefault(r["design"], {"steps": 0, "failed": 0, "seconds": 0.0, "schemes": set()})
        if r["status"] == "ok":
            d["steps"] += 1
            d["seconds"] += r["seconds"]
        else:
            d["failed"] += 1
        d["schemes"].add(r["index"])
    rows = {k: {"steps": v["steps"], "failed": v["failed"], "schemes": len(v["schemes"]),
                "compute_hours": round(v["seconds"] / 3600, 2)} for k, v in sorted(by.items())}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'design':<14} {'steps':>6} {'failed':>6} {'schemes':>7} {'compute h':>9}")
    for k, v in rows.items():
        print(f"{k:<14} {v['steps']:>6} {v['failed']:>6} {v['schemes']:>7} {v['compute_hours']:>9}")
    print(f"{'total':<14} {sum(v['steps'] for v in rows.values()):>6}")
    return 0


def _surrogate(args) -> int:
    """Fit the surrogate on the released data (and ship it), or report its fidelity."""
    from automc_env import dataset as ds
    from automc_env.backends import report as R
    from automc_env.backends.surrogate import SurrogateModel, default_model_path
    from automc_env.env import AutoMCEnv
    from automc_env.home import automc_home

    env = AutoMCEnv(task=args.task, backend="table", store=False)
    if args.action == "fit":
        records = ds.load_records(args.task)
        model = SurrogateModel.fit([r for r in records if r["replicate"] == 0], env, repeats=records)
        path = model.save(args.out or default_model_path(args.task))
        m = model.meta
        print(f"fitted on {m['rows']} steps ({', '.join(f'{k} {v}' for k, v in sorted(m['designs'].items()))}); "
              f"{model.forest.trees} trees, depth {model.forest.depth}; wrote {path}")
        if args.no_report:
            return 0
    else:
        model = None   # the report checks the shipped model's bounds
    agents = (list(R.AGREEMENT_AGENTS) if args.agents is None
              else [a for a in args.agents.split(",") if a and a != "none"])
    report = R.full_report(args.task, agents=agents, seeds=args.seeds, executions=args.executions,
                           families=not args.no_families, live_root=args.live, model=model,
                           log=lambda text: print(text, file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(R.markdown(report))
    out_dir = Path(args.report_dir) if args.report_dir else automc_home() / "reports" / f"surrogate-{args.task}"
    paths = R.write_report(report, out_dir)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def _fmt_stat(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return "nan" if v != v else f"{v:.3f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="automc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("strategies", help="list the strategy space")
    s.add_argument("--grid", default="paper", choices=GRIDS)
    s.add_argument("--method", choices=METHODS)
    s.add_argument("--count", action="store_true", help="print the number of strategies")
    s.add_argument("--show", metavar="ID", help="one strategy by id or name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_strategies)

    t = sub.add_parser("tasks", help="list the registered tasks")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_tasks)

    def common(q):
        q.add_argument("--task", default=DEFAULT_TASK)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
        q.add_argument("--download", action="store_true", help="download CIFAR if it is missing")

    pt = sub.add_parser("pretrain", help="regenerate a task's base model (into AUTOMC_HOME) and compare it "
                                         "with the shipped one")
    common(pt)
    pt.add_argument("--force", action="store_true", help="retrain even if a pre-trained model exists")
    pt.add_argument("--write-shipped", action="store_true",
                    help="maintainers only: write the result into the package (automc_env/base_models) and its "
                         "manifest, replacing the pinned base model of this benchmark version")
    pt.set_defaults(func=_pretrain)

    e = sub.add_parser("evaluate", help="evaluate a scheme step by step")
    common(e)
    e.add_argument("--scheme", required=True, help="strategy ids (e.g. 2022,2045) or names")
    e.add_argument("--grid", default="paper", choices=GRIDS)
    e.add_argument("--checkpoint", help="your base-model weights (state_dict) instead of the pre-trained one")
    e.add_argument("--no-store", action="store_true", help="compute everything; read and write no persistent cache")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)

    se = sub.add_parser("search", help="search for compression schemes with one agent under a budget")
    common(se)
    se.add_argument("--agent", required=True, help="random, tpe, nsga2, rvea, ppo-mask, ppo, rl, automc")
    se.add_argument("--budget", required=True, help="e.g. executions=100 or compute=600,seconds=3600")
    se.add_argument("--grid", default="paper", choices=GRIDS)
    se.add_argument("--out", help="result JSON (rewritten after every evaluation)")
    se.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    se.add_argument("--plot", help="write the Pareto front as a PNG")
    se.add_argument("--options", help="agent options as a JSON object")
    se.add_argument("--workers", type=int, default=0,
                    help="Ray workers computing each batch of new steps in parallel (0: in this process)")
    se.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    se.add_argument("--backend", default="live", choices=["live", "table", "surrogate"],
                    help="live: real compression steps; table: the released real steps only; surrogate: predictions")
    se.add_argument("--actions", help="a sub-space: 'paper-12' (the data set's exhaustive sub-grid) or strategy "
                                      "names separated by ';'")
    se.add_argument("--max-len", type=int, help="longest scheme (default: the task's, 5)")
    se.set_defaults(func=_search)

    b = sub.add_parser("bench", help="run a track's leaderboard protocol: every agent x seed, one result file each")
    b.add_argument("--task", default="digits", help="a task (its live track) or a track name, e.g. digits-surrogate")
    b.add_argument("--track", choices=["live", "surrogate", "table"],
                   help="the task's track: --task digits --track surrogate is the track digits-surrogate")
    b.add_argument("--agents", help="comma-separated (default: every available agent)")
    b.add_argument("--seeds", help="N (seeds 0..N-1, default: the protocol's) or a list like 5,6,7")
    b.add_argument("--budget", help="override the protocol's budget (entries are then listed apart)")
    b.add_argument("--root", default="leaderboards", help="write <root>/<track>/<agent>-seed<k>.json")
    b.add_argument("--agent-options", help='JSON per agent, e.g. \'{"automc": {"knowledge": {"epochs": 20}}}\'')
    b.add_argument("--submission", help="JSON file with the submission block (who, algorithm, code, ...)")
    b.add_argument("--force", action="store_true", help="rerun searches whose result file exists")
    b.add_argument("--device", default="auto")
    b.add_argument("--workers", type=int, default=0,
                   help="run this many searches at once on Ray, one CPU each (0: one by one, in this process)")
    b.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    b.add_argument("--threads", type=int, default=1,
                   help="torch threads per search (recorded; validation replays at the same count; default 1)")
    b.set_defaults(func=_bench)

    lb = sub.add_parser("leaderboard", help="validate result files, render a task's board, show the protocol")
    lb.add_argument("action", choices=["validate", "render", "protocol", "schema", "claims"],
                    help="claims: the AutoMC paper's claims tested on the validated boards and the data set")
    lb.add_argument("files", nargs="*", help="validate: result files")
    lb.add_argument("--task", help="render: one track, e.g. digits or digits-surrogate (default: every track with "
                                   "result files)")
    lb.add_argument("--track", choices=["live", "surrogate", "table"],
                    help="render: with --task, the task's track (--task digits --track table = digits-table)")
    lb.add_argument("--root", default="leaderboards")
    lb.add_argument("--readme", help="render: also replace the task's table block in this Markdown file")
    lb.add_argument("--validate", action="store_true",
                    help="render: validate (replay) the files that have no current validation record first")
    lb.add_argument("--no-record", action="store_true",
                    help="validate: do not write the validation record (render then leaves the file out)")
    lb.add_argument("--json", action="store_true")
    lb.set_defaults(func=_leaderboard)

    from knowledge.cli import add_knowledge_parser
    add_knowledge_parser(sub)

    co = sub.add_parser("collect", help="compute real steps of a sampling design into the task's data set")
    common(co)
    co.add_argument("--design", required=True,
                    help="stratified, exhaustive, repeats-1, repeats-2, trajectories, finals")
    co.add_argument("--workers", type=int, default=0, help="Ray workers (0: compute in this process)")
    co.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    co.add_argument("--threads", type=int, default=1, help="torch threads per step (and per worker)")
    co.add_argument("--hours", type=float, help="stop after this many hours (resume later)")
    co.add_argument("--steps", type=int, help="stop once the design has this many records")
    co.add_argument("--chunk", type=int, default=24, help="schemes per parallel batch")
    co.add_argument("--sample-seed", type=int, default=0, help="seed of the design's scheme sampler")
    co.add_argument("--from", dest="sources", nargs="*",
                    help="trajectories, finals: search result files (their evaluated / reported schemes)")
    co.add_argument("--out", help="data set root (default: the package's automc_env/datasets)")
    co.add_argument("--store", help="evaluation store directory (default: AUTOMC_HOME/store)")
    co.set_defaults(func=_collect)

    dsp = sub.add_parser("dataset", help="summarise the data set of real steps")
    dsp.add_argument("--task", default="digits")
    dsp.add_argument("--root", help="data set root (default: the package's)")
    dsp.add_argument("--json", action="store_true")
    dsp.set_defaults(func=_dataset)

    su = sub.add_parser("surrogate", help="fit the surrogate backend on the data set, or report its fidelity")
    su.add_argument("action", choices=["fit", "report"])
    su.add_argument("--task", default="digits")
    su.add_argument("--out", help="fit: model file (default: the package's automc_env/backends/models/)")
    su.add_argument("--json", action="store_true")
    su.add_argument("--no-report", action="store_true", help="fit: skip the fidelity report")
    su.add_argument("--no-families", action="store_true", help="skip the comparison of model families")
    su.add_argument("--report-dir", help="where report.json, report.md and the plot go "
                                         "(default: AUTOMC_HOME/reports/surrogate-<task>)")
    su.add_argument("--agents", help="comma-separated agents compared on the exhaustive table and on the "
                                     "surrogate (default: the eight built-ins; 'none' to skip)")
    su.add_argument("--seeds", type=int, default=10, help="seeds per agent for the agents' agreement")
    su.add_argument("--executions", type=int, default=150, help="executions per search for the agents' agreement")
    su.add_argument("--live", metavar="ROOT", nargs="?", const="leaderboards",
                    help="also compare the live board's validated searches under ROOT (default: leaderboards) "
                         "with the same searches on the surrogate")
    su.set_defaults(func=_surrogate)

    st = sub.add_parser("store", help="list or clear the evaluation store")
    st.add_argument("action", nargs="?", default="list", choices=["list", "clear"])
    st.add_argument("--fingerprint", help="clear one fingerprint (prefix)")
    st.add_argument("--all", action="store_true", help="clear everything")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_store)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, IndexError, FileNotFoundError, RuntimeError) as e:
        print(f"automc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
