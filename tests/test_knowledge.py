"""Knowledge graph, Algorithm 1 embeddings, their cache and CLI (reduced epochs and triples: CI-sized)."""

from __future__ import annotations

import argparse
import csv
from collections import Counter

import numpy as np
import pytest
import torch

from automc_env.space import HYPERPARAMETERS, get_space
from automc_env.tasks import get_task
from knowledge import embed
from knowledge.embed import KnowledgeConfig, StrategyEmbeddings, fingerprint, load_or_build, train_knowledge
from knowledge.experience import DATA_DIR, feature_means, load_experience, task_features
from knowledge.graph import R1, R2, R3, R4, R5, build_graph


# ---------------------------------------------------------------------------------------------- data

def test_experience_data_converted_with_short_names():
    records = load_experience()
    assert len(records) == 102
    assert sum(r.has_fr for r in records) == 80
    assert all(set(r.settings) == set(get_space("paper").grid(r.method)) for r in records)
    first = records[0]
    assert (first.method, first.dataset, dict(first.settings)) == (
        "LMA", "cifar10", {"ft": "0.33", "dec": "0.81", "seg": "8", "T": "2", "alpha": "0.7"})
    assert first.fr is None and first.ar == pytest.approx(-0.024)
    assert first.features == (10, 32, 3, 6000, 0.9283, 21.4, 800.0)
    legr = [r for r in records if r.method == "LeGR"]
    assert {r.candidate_ft for r in legr} == {"0", "0.08", "0.33", "0.83"}
    assert (DATA_DIR / "README.md").read_text().lower().count("source") >= 1
    with open(DATA_DIR / "experience.tsv", newline="") as f:
        assert "paper_hp_settings" in next(csv.reader(f, delimiter="\t"))


def test_task_features_digits_and_mini_cifar():
    f = task_features(get_task("digits"), {"acc": 95.0, "params": 78_000, "flops": 1_200_000})
    assert f.shape == (7,)
    np.testing.assert_allclose(f, [10, 8, 1, 179.7, 0.95, 0.078, 1.2])
    mini = task_features(get_task("resnet56-cifar10-mini"), {"acc": 58.86, "params": 855_770, "flops": 125.5e6})
    assert mini[3] == pytest.approx(600)  # the official code's value for mini CIFAR-10
    assert task_features(get_task("vgg16-cifar100-mini"), {"acc": 50, "params": 1, "flops": 1})[3] == pytest.approx(60)
    means = feature_means()
    assert means.shape == (7,) and (means > 0).all()
    with pytest.raises(ValueError, match="flops"):
        task_features(get_task("digits"), {"acc": 95.0, "params": 1})


# --------------------------------------------------------------------------------------------- graph

def test_paper_graph_counts():
    g = build_graph("paper")
    assert g.grid_counts == {"strategies": 4525, "methods": 6, "hyperparameters": 16, "settings": 59,
                             "techniques": 8, R1: 4525, R2: 24025, R3: 26, R4: 10, R5: 59}
    space = get_space("paper")
    # entity id == strategy id for the grid strategies
    for i in (0, 2022, 4524):
        assert g.entities[i] == "S:" + space[i].name
    triples = {tuple(t) for t in g.triples.tolist()}
    assert len(triples) == len(g.triples)  # unique
    assert len(set(g.entities)) == len(g.entities)  # unique labels
    # R3 built per method (the official code's bug linked every method to LFB's HPs)
    r3 = Counter(h for h, r, _ in triples if r == R3)
    assert r3 == {"M:C1(LMA)": 5, "M:C2(LeGR)": 5, "M:C3(NS)": 3, "M:C4(SFP)": 3, "M:C5(HOS)": 6, "M:C6(LFB)": 4}
    assert ("M:C2(LeGR)", R3, "H:HP8(crit)") in triples and ("M:C1(LMA)", R3, "H:HP8(crit)") not in triples
    assert {t for h, r, t in triples if r == R4 and h == "M:C5(HOS)"} == {"T:TE6", "T:TE7", "T:TE3"}
    assert ("H:HP1(ft)", R5, "V:ft=0.1") in triples and ("H:HP9(soft)", R5, "V:soft=0.1") in triples
    # one node per hyperparameter, shared by methods
    assert sum(t == "E3" for t in g.entity_types) == len(HYPERPARAMETERS)
    # experience strategies: 57 distinct, 2 of them on the grid, off-grid values as new settings
    assert len(g.record_entities) == 102 and len(set(g.record_entities.tolist())) == 57
    assert g.num_experience_only == 55
    assert "V:dec=0.81" in g.entities and ("H:HP2(dec)", R5, "V:dec=0.81") in triples
    counts = g.counts()
    assert counts["entities"] == 4525 + 55 + 6 + 16 + counts["E4 setting"] + 8
    assert counts[R1] == 4580


def test_code_graph_counts():
    g = build_graph("code_8934")
    assert g.grid == "code"
    assert g.grid_counts == {"strategies": 8934, "methods": 6, "hyperparameters": 16, "settings": 64,
                             "techniques": 8, R1: 8934, R2: 50118, R3: 26, R4: 10, R5: 64}
    assert len({tuple(t) for t in g.triples.tolist()}) == len(g.triples)


def test_triples_factory_uses_the_graph_ids():
    g = build_graph("paper")
    tf = g.triples_factory()
    assert tf.num_entities == len(g.entities) and tf.num_relations == 5 and tf.num_triples == len(g.triples)
    assert tf.entity_to_id["S:" + get_space("paper")[7].name] == 7
    np.testing.assert_array_equal(np.sort(tf.mapped_triples.numpy(), axis=0), np.sort(g.mapped_triples(), axis=0))


# ------------------------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def small_triples() -> np.ndarray:
    """A fixed 1,280-triple subset of the paper graph: the real loop, CI-sized."""
    m = build_graph("paper").mapped_triples()
    return m[np.random.default_rng(0).permutation(len(m))[:1280]]


def _train(triples, **kw):
    return train_knowledge(KnowledgeConfig(**{"epochs": 2, **kw}), train_triples=triples)


def test_training_is_deterministic_for_a_seed(small_triples):
    rng_before = torch.get_rng_state()
    a, b, c = _train(small_triples), _train(small_triples), _train(small_triples, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    ea, eb, ec = a.strategy_embeddings(), b.strategy_embeddings(), c.strategy_embeddings()
    assert ea.vectors.shape == (4526, 32) and ea.vectors.dtype == np.float32
    np.testing.assert_array_equal(ea.vectors, eb.vectors)
    assert not np.allclose(ea.vectors, ec.vectors)
    assert len(a.history["kg_loss"]) == 2 and len(a.history["exp_loss"]) == 2
    assert a.history["kg_loss"][1] < a.history["kg_loss"][0]
    # TransR constraints hold and the START row is a separate (untrained) vector
    assert np.linalg.norm(ea.vectors[1:], axis=1).max() <= 1 + 1e-5
    assert not np.allclose(ea.start, ea.vectors[1])
    pred = a.predict([0, 1, 2])
    assert pred.shape == (3, 2) and np.isfinite(pred).all()


def test_ablations(small_triples):
    graph = build_graph("paper")
    rec = np.unique(graph.record_entities)
    others = np.setdiff1d(np.arange(len(graph.entities)), rec)
    init = _train(small_triples, epochs=0)
    no_kg = _train(small_triples, kg=False)
    v0, v1 = init.entity_vectors(), no_kg.entity_vectors()
    np.testing.assert_array_equal(v0[others], v1[others])  # no gradient → random init kept exactly
    assert not np.allclose(v0[rec], v1[rec])  # experience strategies refined by NN_exp
    assert "kg_loss" not in no_kg.history and len(no_kg.history["exp_loss"]) == 2
    no_exp = _train(small_triples, exp=False)
    assert "exp_loss" not in no_exp.history and len(no_exp.history["kg_loss"]) == 2
    for p0, p1 in zip(init.nn_exp.parameters(), no_exp.nn_exp.parameters()):
        assert torch.equal(p0, p1)  # NN_exp not trained
    full = _train(small_triples)
    assert not np.allclose(full.entity_vectors()[rec], no_exp.entity_vectors()[rec])


def test_transe_switch(small_triples):
    te = _train(small_triples, kg_model="TransE")
    tr = _train(small_triples)
    assert te.config.kg_model == "transe" and type(te.model).__name__ == "TransE"
    assert type(tr.model).__name__ == "TransR"
    assert np.linalg.norm(te.entity_vectors(), axis=1).mean() > 2  # N(0, 1) init, no norm constraint (code)


# ------------------------------------------------------------------------------------- cache and API

def test_cache_round_trip_and_fingerprint(monkeypatch, tmp_path):
    config = KnowledgeConfig(epochs=0, seed=3)
    first = load_or_build(config, progress=False)
    assert first.vectors.shape == (4526, 32) and first.feature_means.shape == (7,)
    assert first.fingerprint == fingerprint(config)
    assert (embed.cache_dir(config) / "embeddings.npz").exists()

    def no_build(*a, **k):
        raise AssertionError("should have loaded from the cache")

    monkeypatch.setattr(embed, "build_embeddings", no_build)
    second = load_or_build(config, progress=False)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_array_equal(first.feature_means, second.feature_means)
    assert second.config == config.validated()
    variants = (config, KnowledgeConfig(epochs=0, seed=4), KnowledgeConfig(epochs=0, seed=3, kg=False),
                KnowledgeConfig(epochs=0, seed=3, grid="code"), KnowledgeConfig(epochs=1, seed=3),
                KnowledgeConfig(epochs=0, seed=3, kg_model="transe"))
    fps = {fingerprint(c) for c in variants}
    assert len(fps) == 6
    assert fingerprint(KnowledgeConfig(epochs=0, seed=3, grid="paper_4525")) == fingerprint(config)
    # API: rows are START then strategies; save/load without pickle
    np.testing.assert_array_equal(first.for_strategy(0), first.vectors[1])
    assert first.for_strategy([[1, 2], [3, 4]]).shape == (2, 2, 32)
    with pytest.raises(IndexError):
        first.for_strategy(4525)
    first.save(tmp_path / "e")
    again = StrategyEmbeddings.load(tmp_path / "e")
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.history == first.history
    assert first.normalise(first.feature_means).tolist() == [1.0] * 7


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy grid"):
        KnowledgeConfig(grid="nope").validated()
    with pytest.raises(ValueError, match="unknown strategy grid"):
        build_graph("nope")
    with pytest.raises(ValueError, match="kg_model"):
        KnowledgeConfig(kg_model="rotate").validated()
    with pytest.raises(ValueError, match="epochs"):
        KnowledgeConfig(epochs=-1).validated()


def test_cli_subcommand_build_and_plot(capsys, tmp_path):
    from knowledge.cli import add_knowledge_parser, method_centroid_accuracy, plot_embeddings

    parser = argparse.ArgumentParser(prog="automc")
    add_knowledge_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["knowledge", "build", "--epochs", "0", "--seed", "3"])
    assert args.func(args) == 0
    assert "4525 x 32" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["knowledge", "build", "--grid", "nope"])
    emb = load_or_build(KnowledgeConfig(epochs=0, seed=3), progress=False)
    png = plot_embeddings(emb, tmp_path / "pca.png")
    assert png.stat().st_size > 1000
    assert 0.0 <= method_centroid_accuracy(emb) <= 1.0
