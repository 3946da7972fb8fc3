"""The shipped strategy embeddings (issue 15): the default Algorithm-1 build ships with the package,
so the AutoMC agent's first search starts at once; any other settings or code fall back to the cache
or a build, saying why."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from knowledge import embed
from knowledge.embed import KnowledgeConfig, StrategyEmbeddings, fingerprint, load_or_build

SOURCE_DIR = embed.SHIPPED_DIR   # the package's folder (tests below point SHIPPED_DIR elsewhere)


@pytest.fixture
def empty_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOMC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def no_build(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("built the embeddings instead of loading the shipped ones")

    monkeypatch.setattr(embed, "build_embeddings", refuse)


VARIANTS = sorted(embed.SHIPPED_VARIANTS)   # "" (the default), "no_kg", "no_exp"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_shipped_file_is_small_pickle_free_and_made_by_this_code(variant):
    config = embed.SHIPPED_VARIANTS[variant]
    folder = embed.shipped_dir(config)
    npz, manifest_path = folder / "embeddings.npz", folder / "embeddings.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["config"] == asdict(config.validated())
    assert manifest["config"]["epochs"] == 200 and manifest["config"]["seed"] == 0
    # fails when the code that computes embeddings changed: re-ship with `automc knowledge build --write-shipped`
    # (plus --no-kg / --no-exp for the ablations)
    assert manifest["fingerprint"] == fingerprint(config), "shipped embeddings are stale"
    assert npz.stat().st_size < 700_000 and manifest_path.stat().st_size < 64_000
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == manifest["sha256"]
    with np.load(npz, allow_pickle=False) as z:
        assert z["vectors"].shape == (4526, 32) and z["vectors"].dtype == np.float32
        assert np.isfinite(z["vectors"]).all() and z["feature_means"].shape == (7,)
        assert len(np.unique(z["vectors"][1:].round(5), axis=0)) > 4400  # trained, not a constant


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_use_loads_the_shipped_embeddings_without_building(empty_home, no_build, variant):
    config = embed.SHIPPED_VARIANTS[variant]
    start = time.perf_counter()
    emb = load_or_build(config)
    assert time.perf_counter() - start < 5
    assert emb.source == "shipped" and emb.fingerprint == fingerprint(config)
    with np.load(embed.shipped_dir(config) / "embeddings.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(emb.vectors, z["vectors"])
    assert not (empty_home / "knowledge").exists()  # nothing copied into the cache


def test_the_ablations_ship_their_own_embeddings():
    """automc-no_kg and automc-no_exp get the embeddings of their configuration, not the default's."""
    vectors = {v: StrategyEmbeddings.load(embed.shipped_dir(c)).vectors for v, c in embed.SHIPPED_VARIANTS.items()}
    assert embed.shipped_dir(KnowledgeConfig(kg=False, exp=False)) is None  # not a shipped variant
    for a, b in (("", "no_kg"), ("", "no_exp"), ("no_kg", "no_exp")):
        assert not np.allclose(vectors[a], vectors[b])


def test_the_automc_agent_searches_with_the_shipped_embeddings(empty_home, no_build):
    from agents.automc import AutoMCAgent
    from agents.base import Budget
    from automc_env.env import AutoMCEnv

    result = AutoMCAgent().search(AutoMCEnv(task="synthetic"), Budget(executions=1), seed=0)
    assert len(result.evaluations) == 1


def test_other_code_or_versions_fall_back_and_say_why(empty_home, monkeypatch, capsys):
    shipped = StrategyEmbeddings.load(embed.SHIPPED_DIR)
    versions = embed._library_versions()
    monkeypatch.setattr(embed, "_library_versions", lambda: {**versions, "torch": "9.9.9"})
    built = []

    def fake_build(config, progress=True):  # stands in for the 10-25 min build
        built.append(config)
        return StrategyEmbeddings(config=config, vectors=shipped.vectors + 1, feature_means=shipped.feature_means,
                                  history={"seconds": []})

    monkeypatch.setattr(embed, "build_embeddings", fake_build)
    emb = load_or_build(KnowledgeConfig())
    err = capsys.readouterr().err
    assert "shipped strategy embeddings" in err and f"made with torch {versions['torch']} (here 9.9.9)" in err
    assert emb.source == "built" and len(built) == 1
    np.testing.assert_array_equal(emb.vectors, shipped.vectors + 1)
    again = load_or_build(KnowledgeConfig())  # now from the cache under the new fingerprint
    assert again.source == "cached" and len(built) == 1


def test_other_settings_and_a_damaged_file_fall_back(empty_home, monkeypatch, tmp_path, capsys):
    assert embed.load_shipped(KnowledgeConfig(epochs=20)) is None
    assert embed.load_shipped(KnowledgeConfig(seed=1)) is None
    assert capsys.readouterr().err == ""  # other settings: nothing to explain, the build says what ships
    damaged = tmp_path / "shipped"
    shutil.copytree(embed.SHIPPED_DIR, damaged)
    vectors = np.load(damaged / "embeddings.npz")["vectors"]
    vectors[5, 3] += 1.0
    np.savez(damaged / "embeddings.npz", vectors=vectors, feature_means=np.ones(7))
    monkeypatch.setattr(embed, "SHIPPED_DIR", damaged)
    assert embed.load_shipped(KnowledgeConfig()) is None
    assert "does not match the sha256" in capsys.readouterr().err


def test_the_fingerprint_digests_computation_not_storage():
    source = Path(embed.__file__).read_text()
    reference = embed._code_digest(source)
    assert reference == embed._code_digest()
    same = [source.replace('emb.source = "cached"', 'emb.source = "from the cache"'),  # storage only
            source.replace("def _say(message: str) -> None:\n", "def _say(message: str) -> None:\n    # loud\n"),
            source.replace("import shutil\n", "import shutil\nimport logging\n")]
    for text in same:
        assert text != source and embed._code_digest(text) == reference
    changed = [source.replace("MARGIN = 1.0", "MARGIN = 2.0"),
               source.replace("nn_exp.train()", "nn_exp.eval()"),
               source.replace("torch.eye(x.shape[-2], x.shape[-1]", "torch.ones(x.shape[-2], x.shape[-1]")]
    for text in changed:
        assert text != source and embed._code_digest(text) != reference


def test_write_shipped_flag(empty_home, monkeypatch, tmp_path, capsys):
    from knowledge.cli import add_knowledge_parser

    parser = argparse.ArgumentParser(prog="automc")
    add_knowledge_parser(parser.add_subparsers(dest="command", required=True))
    shipped = StrategyEmbeddings.load(embed.SHIPPED_DIR)
    shipped.save(embed.cache_dir(KnowledgeConfig()))  # as if built here: the flag takes the cache
    target = tmp_path / "package" / "shipped"
    monkeypatch.setattr(embed, "SHIPPED_DIR", target)
    args = parser.parse_args(["knowledge", "build", "--write-shipped"])
    assert args.func(args) == 0
    assert "written to the package" in capsys.readouterr().out
    manifest = json.loads((target / "embeddings.json").read_text())
    assert manifest["fingerprint"] == fingerprint(KnowledgeConfig())
    np.testing.assert_array_equal(StrategyEmbeddings.load(target).vectors, shipped.vectors)
    assert embed.load_shipped(KnowledgeConfig()).source == "shipped"
    args = parser.parse_args(["knowledge", "build", "--write-shipped", "--epochs", "20"])
    assert args.func(args) == 2
    assert "--write-shipped" in capsys.readouterr().err
    no_kg = StrategyEmbeddings.load(SOURCE_DIR / "no_kg")
    no_kg.save(embed.cache_dir(KnowledgeConfig(kg=False)))
    args = parser.parse_args(["knowledge", "build", "--write-shipped", "--no-kg"])
    assert args.func(args) == 0
    assert (target / "no_kg" / "embeddings.json").exists() and embed.load_shipped(KnowledgeConfig(kg=False)).source == "shipped"
    np.testing.assert_array_equal(embed.load_shipped(KnowledgeConfig()).vectors, shipped.vectors)  # default untouched
