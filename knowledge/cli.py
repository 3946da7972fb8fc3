"""``automc knowledge build|report``: build/cache the strategy embeddings and report their quality.

The report trains Algorithm 1 ``folds + 1`` extra times (plus the cached build for the plot):

* **Link prediction**: hold out 10 % of the KG triples (pykeen's ``split``, which keeps every entity
  in training), train on the rest (with all experience records), and rank the held-out triples'
  heads and tails with pykeen's filtered ``RankBasedEvaluator``. Compared with the same model untrained
  (its random init) and with the exact expectation under uniformly random ranking.
* **NN_exp**: k-fold cross-validation over the 102 experience records (the KG is always complete);
  mean squared and absolute error of AR̂ (all held-out records) and FR̂ (held-out records with FR)
  against a mean predictor (the training folds' mean).
* **Plot**: 2-D PCA of the strategy embeddings (START excluded), coloured by method; plus a
  nearest-centroid method accuracy in the full 32-d space as one number for "does it separate".

``build`` returns at once for the default settings and the ``--no-kg`` / ``--no-exp`` ablations (the
package ships them); ``build --write-shipped`` (maintainers) writes one of those, from the cache or a
fresh build, into the package.

Call :func:`add_knowledge_parser` from the main CLI to get the subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from automc_env.space import GRIDS, get_space
from knowledge.embed import (KG_MODELS, KnowledgeConfig, StrategyEmbeddings, cache_dir, load_or_build, shipped_descriptions,
                             shipped_dir, train_knowledge, write_shipped)
from knowledge.experience import load_experience

__all__ = ["add_knowledge_parser", "experience_cv", "link_prediction", "method_centroid_accuracy",
           "plot_embeddings", "report", "run_knowledge"]


def _config(args) -> KnowledgeConfig:
    return KnowledgeConfig(grid=args.grid, epochs=args.epochs, seed=args.seed, kg=not args.no_kg,
                           exp=not args.no_exp, kg_model=args.kg_model).validated()


def link_prediction(config: KnowledgeConfig, test_ratio: float = 0.1, batch_size: int = 256,
                    progress: bool = False) -> dict:
    """Filtered MRR / hits@10 of held-out triples: trained, untrained, and uniform-random expectation."""
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.metrics.ranking import HitsAtK, InverseHarmonicMeanRank

    from knowledge.graph import build_graph

    import logging

    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)  # warns that CPU is not "safe" for batch tuning
    config = config.validated()
    graph = build_graph(config.grid)
    train_tf, test_tf = graph.triples_factory().split([1.0 - test_ratio, test_ratio], random_state=config.seed)
    train, test = train_tf.mapped_triples, test_tf.mapped_triples
    out: dict = {"train_triples": int(len(train)), "test_triples": int(len(test))}
    for name, cfg in (("untrained", KnowledgeConfig(**{**asdict(config), "epochs": 0})), ("trained", config)):
        trained = train_knowledge(cfg, graph=graph, train_triples=train.numpy(),
                                  progress=progress and name == "trained")
        evaluator = RankBasedEvaluator(filtered=True, clear_on_finalize=False)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            result = evaluator.evaluate(trained.model, test, additional_filter_triples=[train],
                                        batch_size=batch_size, use_tqdm=False)
        finally:
            torch.set_num_threads(threads)
        out[name] = {"mrr": float(result.get_metric("both.realistic.inverse_harmonic_mean_rank")),
                     "hits@10": float(result.get_metric("both.realistic.hits_at_10")),
                     "mean_rank": float(result.get_metric("both.realistic.arithmetic_mean_rank"))}
        if name == "trained":
            out["seconds"] = trained.seconds
            candidates = np.concatenate([np.concatenate(v) for v in evaluator.num_candidates.values()])
            out["random"] = {"mrr": float(InverseHarmonicMeanRank().expected_value(num_candidates=candidates)),
                             "hits@10": float(HitsAtK(k=10).expected_value(num_candidates=candidates)),
                             "mean_rank": float(np.mean((candidates + 1) / 2))}
        evaluator.clear()
    return out


def experience_cv(config: KnowledgeConfig, folds: int = 5, progress: bool = False) -> dict:
    """k-fold held-out error of NN_exp vs a mean predictor (MSE and MAE for AR and FR)."""
    config = config.validated()
    if not config.exp:
        raise ValueError("NN_exp is switched off (--no-exp): there is no held-out error to report")
    records = load_experience()
    n = len(records)
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be in 2..{n}, got {folds}")
    ar = np.array([r.ar for r in records])
    fr = np.array([np.nan if r.fr is None else r.fr for r in records])
    order = np.random.default_rng(config.seed).permutation(n)
    pred = np.full((n, 2), np.nan)
    base = np.full((n, 2), np.nan)
    seconds = 0.0
    for k, held in enumerate(np.array_split(order, folds)):
        train = np.setdiff1d(order, held)
        trained = train_knowledge(config, train_records=train, progress=progress)
        seconds += trained.seconds
        pred[held] = trained.predict(held)
        base[held] = [np.nanmean(fr[train]), ar[train].mean()]
        if progress:
            print(f"  fold {k + 1}/{folds} done ({trained.seconds:.0f} s)", file=sys.stderr)
    has_fr = ~np.isnan(fr)

    def errors(p: np.ndarray) -> dict:
        return {"AR_mse": float(np.mean((p[:, 1] - ar) ** 2)), "AR_mae": float(np.mean(np.abs(p[:, 1] - ar))),
                "FR_mse": float(np.mean((p[has_fr, 0] - fr[has_fr]) ** 2)),
                "FR_mae": float(np.mean(np.abs(p[has_fr, 0] - fr[has_fr])))}

    return {"folds": folds, "records": n, "records_with_fr": int(has_fr.sum()), "nn_exp": errors(pred),
            "mean_predictor": errors(base), "seconds": seconds}


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    explained = s ** 2 / max(float((s ** 2).sum()), 1e-12)
    return x @ vt[:2].T, explained[:2]


def method_centroid_accuracy(emb: StrategyEmbeddings) -> float:
    """Share of strategies whose nearest method centroid (32-d, Euclidean) is their own method."""
    space = get_space(emb.config.grid)
    x = emb.vectors[1:].astype(np.float64)
    labels = np.empty(len(space), dtype=np.int64)
    for i, m in enumerate(space.methods):
        labels[space.method_range(m).start:space.method_range(m).stop] = i
    centroids = np.stack([x[labels == i].mean(axis=0) for i in range(len(space.methods))])
    nearest = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((nearest == labels).mean())


def plot_embeddings(emb: StrategyEmbeddings, out: str | Path) -> Path:
    """2-D PCA scatter of the strategy embeddings coloured by method, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = get_space(emb.config.grid)
    xy, explained = _pca2(emb.vectors[1:].astype(np.float64))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    for method, colour in zip(space.methods, plt.get_cmap("tab10").colors):
        r = space.method_range(method)
        ax.scatter(xy[r.start:r.stop, 0], xy[r.start:r.stop, 1], s=4, alpha=0.6, color=colour,
                   label=f"{method} ({len(r)})", rasterized=True)
    c = emb.config
    variant = c.kg_model + ("" if c.kg else ", no KG") + ("" if c.exp else ", no NN_exp")
    ax.set_title(f"Strategy embeddings ({c.grid} grid, {variant}, {c.epochs} epochs, seed {c.seed})")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def report(config: KnowledgeConfig, out: str | Path | None = None, folds: int = 5, progress: bool = True) -> dict:
    """Link prediction, NN_exp cross-validation and the embedding plot for one configuration."""
    config = config.validated()
    start = time.perf_counter()
    emb = load_or_build(config, progress=progress)
    png = plot_embeddings(emb, out or cache_dir(config) / "embeddings_pca.png")
    result = {"config": asdict(config), "plot": str(png), "method_centroid_accuracy": method_centroid_accuracy(emb),
              "build_seconds_per_epoch": float(np.mean(emb.history["seconds"])) if emb.history["seconds"] else None}
    if config.kg:
        if progress:
            print("link prediction (10 % held-out triples) ...", file=sys.stderr)
        result["link_prediction"] = link_prediction(config, progress=progress)
    if config.exp:
        if progress:
            print(f"NN_exp {folds}-fold cross-validation ...", file=sys.stderr)
        result["nn_exp"] = experience_cv(config, folds=folds, progress=progress)
    result["seconds"] = time.perf_counter() - start
    return result


def format_report(r: dict) -> str:
    c = r["config"]
    lines = [f"knowledge report: {c['grid']} grid, {c['kg_model']}, kg={c['kg']}, exp={c['exp']}, "
             f"{c['epochs']} epochs, seed {c['seed']}"]
    lp = r.get("link_prediction")
    if lp:
        lines += ["", f"link prediction, filtered, {lp['test_triples']} held-out of "
                      f"{lp['test_triples'] + lp['train_triples']} triples (head + tail):",
                  f"  {'model':<24} {'MRR':>8} {'hits@10':>8} {'mean rank':>10}"]
        for key, label in (("trained", "trained"), ("untrained", "untrained (random init)"),
                           ("random", "uniform random ranking")):
            m = lp[key]
            lines.append(f"  {label:<24} {m['mrr']:>8.4f} {m['hits@10']:>8.4f} {m['mean_rank']:>10.1f}")
    cv = r.get("nn_exp")
    if cv:
        lines += ["", f"NN_exp, {cv['folds']}-fold CV over {cv['records']} records "
                      f"({cv['records_with_fr']} with FR):",
                  f"  {'predictor':<16} {'AR MSE':>9} {'AR MAE':>9} {'FR MSE':>9} {'FR MAE':>9}"]
        for key, label in (("nn_exp", "NN_exp"), ("mean_predictor", "mean predictor")):
            m = cv[key]
            lines.append(f"  {label:<16} {m['AR_mse']:>9.5f} {m['AR_mae']:>9.5f} "
                         f"{m['FR_mse']:>9.5f} {m['FR_mae']:>9.5f}")
    lines += ["", f"nearest-method-centroid accuracy of the embeddings: {r['method_centroid_accuracy']:.3f} "
                  f"(1 = every strategy nearest its own method's centroid; random vectors ≈ 1/6)",
              f"plot: {r['plot']}", f"report took {r['seconds']:.0f} s"]
    return "\n".join(lines)


def run_knowledge(args) -> int:
    """Entry point of ``automc knowledge``."""
    config = _config(args)
    if args.write_shipped and (args.action != "build" or shipped_dir(config) is None):
        print(f"error: --write-shipped (maintainers) writes shipped embeddings into the package: "
              f"`automc knowledge build --write-shipped` with no other options, or with only --no-kg or "
              f"--no-exp (the package ships: {shipped_descriptions()})", file=sys.stderr)
        return 2
    if args.action == "build":
        start = time.perf_counter()
        # --write-shipped takes the cache or a fresh build, never the shipped file it replaces
        emb = load_or_build(config, progress=not args.json, shipped=not args.write_shipped)
        seconds = time.perf_counter() - start
        path = shipped_dir(config) if emb.source == "shipped" else cache_dir(config)
        if args.write_shipped:
            build_seconds = float(sum(emb.history.get("seconds", []))) if emb.source == "cached" else seconds
            path = write_shipped(emb, seconds=build_seconds)
        info = {"path": str(path), "source": emb.source, "fingerprint": emb.fingerprint,
                "shape": list(emb.vectors.shape), "seconds": seconds,
                "final": {k: v[-1] for k, v in emb.history.items() if k != "seconds" and v}}
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"strategy embeddings {emb.vectors.shape[0] - 1} x {emb.vectors.shape[1]} (+ START) at {path} "
                  f"({'written to the package' if args.write_shipped else emb.source})")
            print(f"fingerprint {emb.fingerprint[:16]}; {seconds:.1f} s; final losses "
                  + ", ".join(f"{k} {v:.5f}" for k, v in info["final"].items()))
        return 0
    if args.action == "report":
        r = report(config, out=args.out, folds=args.folds, progress=not args.json)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(format_report(r))
        return 0
    raise ValueError(f"unknown action {args.action!r}; allowed: build, report")


def add_knowledge_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``knowledge build|report`` to the main CLI's subparsers."""
    k = subparsers.add_parser("knowledge", help="strategy embeddings (Algorithm 1): build/cache or report quality")
    k.add_argument("action", choices=["build", "report"])
    k.add_argument("--grid", default="paper", choices=GRIDS)
    k.add_argument("--epochs", type=int, default=KnowledgeConfig.epochs, help="Algorithm 1 epochs (paper: 200)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--no-kg", action="store_true", help="ablation AutoMC-KG: no TransR passes (random init)")
    k.add_argument("--no-exp", action="store_true", help="ablation AutoMC-NN_exp: TransR only")
    k.add_argument("--kg-model", default="transr", choices=KG_MODELS, help="transe = the official code")
    k.add_argument("--folds", type=int, default=5, help="report: NN_exp cross-validation folds")
    k.add_argument("--out", help="report: PNG path of the embedding plot (default: next to the cached embeddings)")
    k.add_argument("--json", action="store_true")
    k.add_argument("--write-shipped", action="store_true",
                   help="maintainers: build the default embeddings (or take them from the cache) and write them "
                        "into the package (knowledge/shipped/), where a first AutoMC search loads them")
    k.set_defaults(func=run_knowledge)
    return k


def main(argv: list[str] | None = None) -> int:
    """Stand-alone ``python -m knowledge.cli build|report ...`` (same as ``automc knowledge``).

    Builds its own parser, so ``knowledge`` never imports the ``automc`` command (no import cycle).
    """
    parser = argparse.ArgumentParser(prog="python -m knowledge.cli")
    add_knowledge_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["knowledge", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
