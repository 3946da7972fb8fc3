"""Surrogate backend: exact flat forests, deterministic labelled answers, versions enforced, no pickles."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from automc_env import dataset as ds
from automc_env.backends.surrogate import (FlatForest, Featurizer, SurrogateError, SurrogateModel, fit_models,
                                           noise_sd, real_front, training_rows)
from automc_env.env import AutoMCEnv
from automc_env.space import get_space

SPACE = get_space("paper")
NAMES = ["NS(ft=0.1,dec=0.12,max=0.9)", "SFP(dec=0.2,soft=0.1,every=1)", "LFB(ft=0.2,dec=0.12,factor=1,loss=CE)",
         "LeGR(ft=0.1,dec=0.04,max=0.7,evo=0.4,crit=l2_bn)", "HOS(ft=0.1,dec=0.04,layer=P1,filter=l1norm,aux=0.3,mse=1)",
         "LMA(ft=0.1,dec=0.04,seg=6,T=6,alpha=0.5)"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A surrogate fitted on real synthetic steps (every one- and two-step scheme over six strategies)."""
    live = AutoMCEnv(task="synthetic", store=tmp_path_factory.mktemp("sur-store"))
    ids = [SPACE.parse(n).id for n in NAMES]
    schemes = [[a] for a in ids] + [[a, b] for a in ids for b in ids]
    records, hw = [], ds.hardware(1, "cpu")
    for i, scheme in enumerate(schemes):
        live.evaluate(scheme)
        rec = live.store.get(live.fingerprint, scheme)
        records.append(ds.step_record(live, "test", i, tuple(scheme), rec.metrics, hw))
    table = AutoMCEnv(task="synthetic", backend="table", store=False)
    model = SurrogateModel.fit(records, table, params={"max_iter": 60, "min_samples_leaf": 2})
    return table, model, records, schemes


def test_flat_forest_predicts_exactly_what_sklearn_predicts(fitted):
    table, model, records, _ = fitted
    featurizer = Featurizer(table.space, table.task)
    X, Y, _ = training_rows(records, featurizer, dict(table.base, test_acc=table.base_test_acc))
    models = fit_models(X, Y, {"max_iter": 60, "min_samples_leaf": 2})
    forest = FlatForest.from_sklearn(models)
    expected = np.stack([m.predict(X) for m in models], axis=1)
    assert np.allclose(forest.predict_many(X), expected, rtol=0, atol=1e-12)
    assert all(np.allclose(forest.predict(x), e, rtol=0, atol=1e-12) for x, e in zip(X[:10], expected[:10]))


def test_surrogate_answers_are_labelled_deterministic_and_chain(fitted, tmp_path):
    table, model, records, schemes = fitted
    path = model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as z:                     # npz members are plain arrays: no pickle anywhere
        assert all(not z.read(n).startswith(b"\x80") for n in z.namelist())
    loaded = SurrogateModel.load(path)
    env = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": path}, store=False)
    deep = schemes[-1] + [SPACE.parse("NS(ft=0.2,dec=0.12,max=0.7)").id]  # 3 steps: never seen, still answered
    a = env.evaluate(deep)
    b = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": loaded}, store=False).evaluate(deep)
    assert a == b and len(a) == 3
    assert all(i["backend"] == "surrogate" and i["cached"] is False and i["seconds"] == 0.0 for i in a)
    assert 0 <= a[-1]["acc"] <= 100 and a[-1]["params"] < a[0]["params"] and a[-1]["cost"] > 0
    env.reset(options={"scheme": deep})
    assert 0 <= env.test_accuracy() <= 100
    with pytest.raises(RuntimeError, match="metrics, not models"):
        _ = env.model


def test_real_front_is_the_best_accuracy_at_each_pr_or_higher():
    rows = [{"params": p, "acc": a, "test_acc": t} for p, a, t in
            [(100, 90.0, 80.0), (50, 95.0, 85.0), (50, 97.0, 84.0), (20, 93.0, 88.0), (10, 91.0, 70.0)]]
    front = real_front(rows, base_params=100)
    caps = SurrogateModel(None, {"front": front}).bounds["front"]
    for q in (0.0, 0.3, 0.5, 0.6, 0.8, 0.85, 0.9, 0.99):
        at = min(np.searchsorted(caps["pr"], q, side="left"), len(caps["pr"]) - 1)
        above = [r for r in rows if 1 - r["params"] / 100 >= q] or [rows[-1]]   # past the last: its accuracy
        assert caps["acc"][at] == max(r["acc"] for r in above), q
        assert caps["test_acc"][at] == max(r["test_acc"] for r in above), q


def test_no_answer_beats_the_real_front_it_was_fitted_on(fitted):
    """A search on the surrogate cannot find a predicted scheme better, at its PR, than every real step
    at that PR or more: the trees' over-optimism at high compression is cut at the real front."""
    table, model, records, schemes = fitted
    env = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model}, store=False)
    base = env.base["params"]
    rng = np.random.default_rng(0)
    for _ in range(60):
        env.reset()
        scheme = []
        for _ in range(3):
            scheme.append(int(rng.choice(np.flatnonzero(env.action_masks()))))
            *_, done, cut, info = env.step(scheme[-1])
            best = [r["acc"] for r in records if 1 - r["params"] / base >= info["PR"] - 1e-12]
            assert info["acc"] <= max(best or [records[int(np.argmin([r["params"] for r in records]))]["acc"]])
            if done or cut:
                break


def test_noise_needs_repeats_and_is_seeded(fitted):
    table, model, records, schemes = fitted
    with pytest.raises(SurrogateError, match="without repeats"):
        AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model, "noise": True}, store=False)
    noisy_model = SurrogateModel(model.forest, {**model.meta, "noise_sd": {"acc": 1.0, "test_acc": 1.0}})
    make = lambda seed: AutoMCEnv(task="synthetic", backend="surrogate", seed=0,  # noqa: E731
                                  backend_options={"model": noisy_model, "noise": True}, store=False)
    plain = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model}, store=False)
    n1, n2, p = make(0).evaluate(schemes[7]), make(0).evaluate(schemes[7]), plain.evaluate(schemes[7])
    assert n1 == n2 and n1[-1]["acc"] != p[-1]["acc"] and n1[-1]["params"] == p[-1]["params"]


def test_noise_spread_is_measured_per_accuracy_level():
    """Repeats that agree at high accuracy and scatter at low accuracy give two different spreads."""
    def rep(scheme, r, acc):
        return {"scheme": scheme, "replicate": r, "acc": acc, "test_acc": acc}
    rng = np.random.default_rng(0)
    records = [rep([i], r, 98.0 + 0.1 * z) for i in range(12) for r, z in enumerate(rng.standard_normal(3))]
    records += [rep([100 + i], r, 60.0 + 5.0 * z) for i in range(12) for r, z in enumerate(rng.standard_normal(3))]
    records += [rep([200], 0, 50.0)]                                          # no repeat: not counted
    sd = noise_sd(records)
    low, middle, high = sd["by_level"]["acc"]
    assert sd["schemes"] == 24 and sd["levels"] == [80.0, 95.0]
    assert 0.03 < high < 0.3 and 2.0 < low < 10.0 and middle == sd["acc"]     # too few schemes: the pooled value
    assert low > sd["acc"] > high


def test_noise_is_measured_not_compounded(fitted):
    """With noise, every step reports the noise-free answer plus that step's own draw: the next step
    starts from the noise-free state, so the spread at depth 3 is the measured one, not three stacked."""
    table, model, records, schemes = fitted
    noisy_model = SurrogateModel(model.forest, {**model.meta, "noise_sd": {"acc": 1.0, "test_acc": 2.0}})
    noisy = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": noisy_model, "noise": True},
                      store=False)
    plain = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model}, store=False)
    deep = schemes[-1] + [schemes[3][0]]
    got, clean = noisy.evaluate(deep), plain.evaluate(deep)
    backend = noisy._backend
    for k, (g, c) in enumerate(zip(got, clean)):
        draw = backend.noise_draw(tuple(deep[:k + 1]))
        lo, hi = model.bounds.get("acc", (0.0, 100.0))
        expected = min(max(c["acc"] + draw[0] * 1.0, lo), hi)
        front = model.bounds["front"]
        at = min(np.searchsorted(front["pr"], 1.0 - g["params"] / front["base_params"]), len(front["pr"]) - 1)
        assert g["acc"] == pytest.approx(min(expected, front["acc"][at]), abs=1e-9)
        assert g["params"] == c["params"] and g["flops"] == c["flops"]


def test_the_shipped_surrogate_offers_seed_noise():
    env = AutoMCEnv(task="digits", backend="surrogate", backend_options={"noise": True}, store=False)
    spread = env._backend.model.meta["noise_sd"]
    assert spread["schemes"] > 100 and spread["by_level"]["acc"][0] > spread["by_level"]["acc"][-1]
    plain = AutoMCEnv(task="digits", backend="surrogate", store=False)
    scheme = [int(np.flatnonzero(plain.action_masks())[0])]
    assert env.evaluate(scheme)[0]["acc"] != plain.evaluate(scheme)[0]["acc"]


def test_a_surrogate_of_another_version_or_environment_is_refused(fitted):
    table, model, records, _ = fitted
    old = SurrogateModel(model.forest, {**model.meta, "version": "automc-bench/0"})
    with pytest.raises(SurrogateError, match="version 'automc-bench/0'"):
        AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": old}, store=False)
    with pytest.raises(SurrogateError, match="method_options"):
        AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model}, store=False,
                  method_options={"NS": {"sparsity": 1e-4, "sparsity_epochs": 0.1}})
    with pytest.raises(SurrogateError, match="cannot train"):
        SurrogateModel.fit([{**r, "version": "automc-bench/0"} for r in records], table)
    with pytest.raises(SurrogateError, match="fit one with"):
        AutoMCEnv(task="synthetic", backend="surrogate", store=False)     # no shipped model for synthetic
    assert json.loads(json.dumps(model.meta))["version"] == model.meta["version"]


def test_fidelity_statistics_and_noise_ceiling(fitted):
    from automc_env.backends import report as R

    table, model, records, schemes = fitted
    base = dict(table.base)
    truth = list(R.truths(records, base).values())
    same = R.compare(truth, truth, table.task.gamma)
    assert same["acc_tau"] == pytest.approx(1.0) and same["acc_mae"] == 0 and same["PR_r2"] == pytest.approx(1.0)
    # a second replicate identical to the first is a perfect ceiling; a noisy one is not
    twin = [{**r, "replicate": 1, "design": "repeats-1"} for r in records]
    rng = np.random.default_rng(0)
    noisy = [{**r, "replicate": 2, "design": "repeats-2", "acc": r["acc"] + rng.normal(0, 5)} for r in records]
    ceiling = R.noise_ceiling(records + twin + noisy, table)
    assert ceiling["replicate_1"]["acc_tau"] == pytest.approx(1.0) and ceiling["replicate_1"]["acc_mae"] == 0
    assert ceiling["replicate_2"]["acc_tau"] < 0.95 and ceiling["replicate_2"]["acc_mae"] > 1
    # the expected result: replicates 1 and 2 of the schemes under the first two strategies, with opposite
    # noise, average to replicate 0 exactly; the surrogate never saw those schemes
    assert R.expected_truth(records + twin, table) is None        # needs two replicates besides 0
    first = {tuple(s) for s in schemes if s[0] in (schemes[0][0], schemes[1][0])}
    shift = {tuple(r["scheme"]): rng.normal(0, 2) for r in records}
    pm = [{**r, "replicate": k, "design": f"repeats-{k}", "acc": r["acc"] + sign * shift[tuple(r["scheme"])]}
          for k, sign in ((1, 1), (2, -1)) for r in records if tuple(r["scheme"]) in first]
    truth = R.expected_truth(records + pm, table, params={"max_iter": 60, "min_samples_leaf": 2})
    assert truth["replicates_averaged"] == [1, 2] and truth["one_real_run"]["schemes"] == len(first) == 14
    assert truth["one_real_run"]["acc_mae"] == pytest.approx(0, abs=1e-9)
    assert truth["surrogate"]["schemes"] == 14 and truth["surrogate"]["acc_mae"] > 0
    # a random hold-out: the model never sees the held-out schemes' steps, and is scored on all of them
    train, test = R.split_random(records, 0.25, seed=0)
    assert not {tuple(r["scheme"]) for r in train} & {tuple(r["scheme"]) for r in test}
    out = R.evaluate_split(train, test, records, table, params={"max_iter": 60, "min_samples_leaf": 2})
    assert out["schemes"] == len(test) and out["train_steps"] <= len(train)
    assert -1 <= out["acc_tau"] <= 1 and out["cost_rel_error"] >= 0


def test_live_agreement_replays_the_live_boards_searches_on_the_surrogate(fitted, tmp_path):
    """The live board's validated files against the same agents, seeds and options on the surrogate."""
    import dataclasses

    from agents.base import Budget
    from agents.leaderboard import PROTOCOLS, get_protocol, run_bench, validate_file
    from agents.leaderboard.metrics import hypervolume
    from agents.runner import run_search
    from automc_env.backends import report as R

    table, model, _, _ = fitted
    budget = Budget(executions=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PROTOCOLS, "synthetic", dataclasses.replace(get_protocol("synthetic"), budget=budget))
        assert R.live_agreement("synthetic", tmp_path, model=model, log=lambda *_: None) is None   # no board yet
        paths = run_bench("synthetic", ["random", "nsga2"], [0, 1], root=tmp_path, progress=False,
                          log=lambda *_: None)
        for p in paths:
            validate_file(p)
        out = R.live_agreement("synthetic", tmp_path, model=model, log=lambda *_: None)
    assert sorted(out["hv"]["real"]) == ["nsga2", "random"] and out["seeds"] == [0, 1]
    gamma, base_acc = table.task.gamma, table.base["acc"]
    for p in paths:   # the real side is the file's trajectory, the surrogate side the same search re-run
        entry = json.loads(p.read_text())
        real = hypervolume(((e["acc"], e["PR"]) for e in entry["evaluations"] if not e["failed"]), base_acc, gamma)
        assert real in out["hv"]["real"][entry["agent"]]
        env = AutoMCEnv(task="synthetic", backend="surrogate", backend_options={"model": model}, store=False)
        options = entry["agent_config"]["options"]   # the re-runnable options, as the validator uses them
        again = run_search(env, entry["agent"], budget, entry["seed"], progress=False, **options)
        predicted = hypervolume(((e.acc, e.PR) for e in again.evaluations if not e.failed), base_acc, gamma)
        assert predicted == out["hv"]["surrogate"][entry["agent"]][entry["seed"]]
    assert -1 <= out["agents_tau"] <= 1 or out["agents_tau"] != out["agents_tau"]


@pytest.mark.parametrize("mode", ["log_error", "absolute", "delta"])
def test_every_accuracy_encoding_decodes_back_to_the_real_step(fitted, mode):
    """The regression targets of a real step, decoded, give that step's metrics back (exact targets in,
    the step out): what the model learns is what the environment answers, in every encoding."""
    from automc_env.backends.surrogate import decode, targets_of

    table, _, records, _ = fitted
    base = dict(table.base, test_acc=table.base_test_acc)
    parent = {tuple(r["scheme"]): r for r in records}
    rows = [(base if len(r["scheme"]) == 1 else parent[tuple(r["scheme"][:-1])], r) for r in records]
    y = np.array([targets_of(p, c, mode) for p, c in rows])
    got = decode(y, {k: np.array([float(p[k]) for p, _ in rows]) for k in ("acc", "test_acc", "params", "flops")}, mode)
    for key in ("acc", "test_acc", "cost"):
        assert np.allclose(got[key], [c[key] for _, c in rows], rtol=0, atol=1e-9), key
    for key in ("params", "flops"):
        assert np.array_equal(got[key], [c[key] for _, c in rows]), key


def test_a_batch_split_over_threads_gives_each_row_its_single_walk(fitted, monkeypatch):
    table, model, records, _ = fitted
    featurizer = Featurizer(table.space, table.task)
    X, _, _ = training_rows(records, featurizer, dict(table.base, test_acc=table.base_test_acc))
    forest = model.forest
    rows = np.tile(X, (1 + 8 * FlatForest.ROWS_PER_THREAD // len(X), 1))   # several rows' worth per thread
    rows = rows + np.random.default_rng(0).normal(0, 0.05, rows.shape)            # rows that differ
    monkeypatch.setattr(forest, "threads", 3)
    got = forest.predict_many(rows)
    assert np.array_equal(got, np.stack([forest.predict(x) for x in rows]))


def test_the_ceiling_gap_is_a_paired_bootstrap_of_tau_differences():
    from automc_env.backends import report as R

    rng = np.random.default_rng(0)
    schemes = [(i,) for i in range(60)]
    truth = rng.uniform(80, 99, len(schemes))
    row = lambda acc: {"acc": acc, "test_acc": acc, "PR": 0.5}   # noqa: E731
    reps = {0: {s: row(a) for s, a in zip(schemes, truth)},
            1: {s: row(a + rng.normal(0, 2)) for s, a in zip(schemes, truth)},
            2: {s: row(a + rng.normal(0, 2)) for s, a in zip(schemes, truth)}}
    # a surrogate that answers like replicate 1 has no gap to it, and a perfect one sits above the ceiling
    same = R.ceiling_gap(dict(reps[1]), reps, gamma=0.3, resamples=200)
    assert same["schemes"] == 60 and same["acc_vs_replicate_1"]["gap"] == 0
    assert same["acc_vs_replicate_1"]["ci95"] == [0, 0]
    perfect = R.ceiling_gap(dict(reps[0]), reps, gamma=0.3, resamples=200)
    lo, hi = perfect["test_acc_vs_mean"]["ci95"]
    assert perfect["test_acc_vs_mean"]["gap"] > 0 and 0 < lo < hi
    # a surrogate that ranks at random is below it, with the interval excluding zero
    blind = R.ceiling_gap({s: row(a) for s, a in zip(schemes, rng.permutation(truth))}, reps, gamma=0.3, resamples=200)
    assert blind["acc_vs_mean"]["ci95"][1] < 0
    # schemes below γ do not count; too few schemes give no verdict
    low = {k: {s: {**v, "PR": 0.1} for s, v in r.items()} for k, r in reps.items()}
    assert R.ceiling_gap(dict(low[1]), low, gamma=0.3) == {}
