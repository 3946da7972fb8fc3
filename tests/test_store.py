"""Behaviour of the evaluation store: round trips, prefix lookup, crash safety, self-healing, concurrency."""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from automc_env import serialize
from automc_env import store as store_module
from automc_env.store import CheckpointError, EvaluationStore, StepRecord

FP = hashlib.sha256(b"cifar10/resnet56/seed0").hexdigest()
OTHER_FP = hashlib.sha256(b"cifar100/vgg16/seed1").hexdigest()
INPUT = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def small_model(fill: float | None = None) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    if fill is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(fill)
    return model


@pytest.fixture
def store(tmp_path: Path):
    with EvaluationStore(tmp_path / "store") as opened:
        yield opened


def temp_files(store: EvaluationStore) -> list[Path]:
    return list((store.root / "checkpoints").rglob("*.tmp"))


def test_layout_and_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMC_HOME", str(tmp_path / "home"))
    with EvaluationStore() as default:
        assert default.root == (tmp_path / "home" / "store").resolve()
        assert (default.root / "index.sqlite").is_file()
        assert (default.root / "checkpoints").is_dir()


def test_put_get_round_trip(store: EvaluationStore) -> None:
    model = small_model()
    metrics = {"acc": 0.91, "params": 1234, "AR": 0.5, "nested": {"per_layer": [1, 2]}}
    put = store.put(FP, (2010, 2031), metrics, model, seconds=12.5)

    got = store.get(FP, [2010, 2031])
    assert got == put
    assert got.fingerprint == FP
    assert got.scheme == (2010, 2031)
    assert got.metrics == metrics
    assert got.seconds == 12.5
    assert got.checkpoint.is_absolute() and got.checkpoint.is_file()
    assert got.checkpoint == (store.root / "checkpoints" / FP[:16]
                              / (hashlib.sha1(b"2010,2031").hexdigest() + ".safetensors"))
    assert serialize.METADATA_KEY.encode() in got.checkpoint.read_bytes()[:4096]  # a safetensors file, no pickle

    loaded = store.load_model(got)
    assert isinstance(loaded, nn.Sequential)
    torch.testing.assert_close(loaded(INPUT), model(INPUT), rtol=0, atol=0)

    assert store.get(FP, (2010,)) is None
    assert store.get(OTHER_FP, (2010, 2031)) is None


def test_records_survive_reopening(tmp_path: Path) -> None:
    with EvaluationStore(tmp_path) as first:
        first.put(FP, (7,), {"acc": 0.5}, small_model(), seconds=1.0)
    with EvaluationStore(tmp_path) as second:
        record = second.get(FP, (7,))
        assert record is not None and record.metrics == {"acc": 0.5}
        second.load_model(record)


def test_put_replaces_existing_step(store: EvaluationStore) -> None:
    store.put(FP, (1,), {"acc": 0.1}, small_model(fill=0.1), seconds=1.0)
    store.put(FP, (1,), {"acc": 0.2}, small_model(fill=0.2), seconds=2.0)
    record = store.get(FP, (1,))
    assert record.metrics == {"acc": 0.2} and record.seconds == 2.0
    assert all(torch.all(p == 0.2) for p in store.load_model(record).parameters())
    assert len(store.records(FP)) == 1


def test_longest_prefix(store: EvaluationStore) -> None:
    store.put(FP, (1,), {"step": 1}, small_model(), seconds=1.0)
    store.put(FP, (1, 2), {"step": 2}, small_model(), seconds=1.0)

    assert store.longest_prefix(FP, (1, 2, 3)).scheme == (1, 2)
    assert store.longest_prefix(FP, (1, 2)).scheme == (1, 2)  # the scheme itself counts
    assert store.longest_prefix(FP, (1, 3)).scheme == (1,)
    assert store.longest_prefix(FP, (5,)) is None
    assert store.longest_prefix(FP, (2, 1)) is None  # (2,) is not a prefix of anything stored
    assert store.longest_prefix(OTHER_FP, (1, 2, 3)) is None


def test_longest_prefix_uses_one_query(store: EvaluationStore) -> None:
    store.put(FP, (1,), {}, small_model(), seconds=0.0)
    statements: list[str] = []
    with store._locked() as conn:
        conn.set_trace_callback(statements.append)
    try:
        assert store.longest_prefix(FP, (1, 2, 3, 4, 5)).scheme == (1,)
    finally:
        with store._locked() as conn:
            conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1


def test_records_are_ordered_by_length_then_scheme(store: EvaluationStore) -> None:
    for scheme in [(10, 1), (2,), (10,), (2, 5), (1, 2, 3)]:
        store.put(FP, scheme, {}, small_model(), seconds=0.0)
    store.put(OTHER_FP, (3,), {}, small_model(), seconds=0.0)
    assert [r.scheme for r in store.records(FP)] == [(2,), (10,), (2, 5), (10, 1), (1, 2, 3)]
    assert store.records("never-seen") == []


def test_metrics_are_strict_json(store: EvaluationStore) -> None:
    record = store.put(FP, (1,), {"acc": math.nan, "loss": [math.inf, 1.5]}, small_model(), seconds=0.0)
    assert record.metrics == {"acc": None, "loss": [None, 1.5]}
    assert store.get(FP, (1,)).metrics == {"acc": None, "loss": [None, 1.5]}

    for bad in ({"acc": torch.tensor(0.5)}, {"acc": object()}, {1: 0.5}, [("acc", 0.5)]):
        with pytest.raises(ValueError, match="metrics must"):
            store.put(FP, (2,), bad, small_model(), seconds=0.0)
    assert store.get(FP, (2,)) is None


@pytest.mark.parametrize(
    "scheme, fragment",
    [
        ((), "empty"),
        ([], "empty"),
        ("2010", "str"),
        (2010, "int"),
        (None, "NoneType"),
        ((2010, 1.0), "item 1 .* float"),
        ((True,), "item 0 .* bool"),
        ((2010, -1), "item 1 .* negative"),
        ((1, "2"), "item 1 .* str"),
    ],
)
def test_bad_schemes_are_rejected(store: EvaluationStore, scheme: object, fragment: str) -> None:
    for call in (
        lambda: store.get(FP, scheme),
        lambda: store.longest_prefix(FP, scheme),
        lambda: store.put(FP, scheme, {}, small_model(), seconds=0.0),
    ):
        with pytest.raises(ValueError, match="non-empty sequence of non-negative int strategy ids") as info:
            call()
        assert info.match(fragment)
    assert store.records(FP) == []


def test_other_bad_arguments(store: EvaluationStore) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        store.get("", (1,))
    with pytest.raises(TypeError, match="nn.Module"):
        store.put(FP, (1,), {}, {"not": "a model"}, seconds=0.0)
    with pytest.raises(ValueError, match="seconds"):
        store.put(FP, (1,), {}, small_model(), seconds=-1.0)


def test_non_hex_fingerprints_stay_inside_the_store(store: EvaluationStore) -> None:
    record = store.put("../../escape", (1,), {}, small_model(), seconds=0.0)
    assert record.checkpoint.parent.parent == store.root / "checkpoints"
    assert record.checkpoint.parent.name == hashlib.sha256(b"../../escape").hexdigest()[:16]
    store.load_model(record)


def test_crash_while_writing_checkpoint_leaves_old_state(
    store: EvaluationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = small_model()
    store.put(FP, (1,), {"acc": 0.5}, model, seconds=1.0)

    def crash(obj: object, f, *args: object, **kwargs: object) -> None:
        f.write(b"partial checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(serialize, "save_model", crash)
    for scheme in [(1, 2), (1,)]:  # a new key and an existing key
        with pytest.raises(OSError, match="disk full"):
            store.put(FP, scheme, {"acc": 0.9}, small_model(), seconds=1.0)
    monkeypatch.undo()

    assert store.get(FP, (1, 2)) is None
    assert temp_files(store) == []
    assert [r.scheme for r in store.records(FP)] == [(1,)]
    old = store.get(FP, (1,))
    assert old.metrics == {"acc": 0.5}
    torch.testing.assert_close(store.load_model(old)(INPUT), model(INPUT), rtol=0, atol=0)
    assert list(old.checkpoint.parent.iterdir()) == [old.checkpoint]  # no final file for (1, 2), no temp file


def test_crash_at_rename_leaves_old_state(store: EvaluationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model()
    old = store.put(FP, (1,), {"acc": 0.5}, model, seconds=1.0)

    def crash(src: object, dst: object) -> None:
        raise OSError("killed at rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed at rename"):
        store.put(FP, (1,), {"acc": 0.9}, small_model(), seconds=1.0)
    with pytest.raises(OSError, match="killed at rename"):
        store.put(FP, (1, 2), {"acc": 0.9}, small_model(), seconds=1.0)
    monkeypatch.undo()

    assert store.get(FP, (1,)) == old
    assert store.get(FP, (1, 2)) is None
    assert temp_files(store) == []
    assert list(old.checkpoint.parent.iterdir()) == [old.checkpoint]
    torch.testing.assert_close(store.load_model(old)(INPUT), model(INPUT), rtol=0, atol=0)


def test_crash_after_rename_before_commit_removes_new_file(
    store: EvaluationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.put(FP, (1,), {"acc": 0.5}, small_model(), seconds=1.0)

    def crash(directory: Path) -> None:
        raise OSError("killed before commit")

    monkeypatch.setattr(store_module, "_fsync_directory", crash)
    with pytest.raises(OSError, match="killed before commit"):
        store.put(FP, (1, 2), {"acc": 0.9}, small_model(), seconds=1.0)
    monkeypatch.undo()

    assert store.get(FP, (1, 2)) is None
    assert list(old.checkpoint.parent.iterdir()) == [old.checkpoint]  # no orphan, no temp file
    assert store.get(FP, (1,)) == old


def test_missing_checkpoint_raises_and_drops_row(store: EvaluationStore) -> None:
    record = store.put(FP, (1, 2), {"acc": 0.5}, small_model(), seconds=1.0)
    store.put(FP, (1,), {"acc": 0.6}, small_model(), seconds=1.0)
    record.checkpoint.unlink()

    with pytest.raises(CheckpointError, match="missing.*recomputed"):
        store.load_model(record)
    assert store.get(FP, (1, 2)) is None
    assert store.longest_prefix(FP, (1, 2)).scheme == (1,)  # the next lookup falls back


def test_corrupt_checkpoint_raises_and_drops_row_and_file(store: EvaluationStore) -> None:
    record = store.put(FP, (1,), {"acc": 0.5}, small_model(), seconds=1.0)
    record.checkpoint.write_bytes(b"this is not a torch checkpoint")

    with pytest.raises(CheckpointError, match="cannot be loaded"):
        store.load_model(record)
    assert store.get(FP, (1,)) is None
    assert not record.checkpoint.exists()


def test_stale_record_does_not_drop_a_fresh_row(store: EvaluationStore) -> None:
    stale = store.put(FP, (1,), {"acc": 0.5}, small_model(), seconds=1.0)
    fresh = store.put(FP, (1,), {"acc": 0.6}, small_model(), seconds=1.0)
    fresh.checkpoint.unlink()
    with pytest.raises(CheckpointError):
        store.load_model(stale)  # another process already replaced this row: leave the new one alone
    assert store.get(FP, (1,)) == fresh


def test_refuses_to_load_files_outside_the_store(store: EvaluationStore, tmp_path: Path) -> None:
    outside = tmp_path / "foreign.safetensors"
    serialize.save_model(small_model(), outside)
    sneaky = store.root / "checkpoints" / ".." / ".." / "foreign.safetensors"
    inside = store.put(FP, (1,), {}, small_model(), seconds=0.0).checkpoint.with_suffix(".json")
    inside.write_text("{}")
    for path in (outside, sneaky, store.root / "index.sqlite", inside):
        record = StepRecord(FP, (1,), {}, path, 0.0, 0.0)
        with pytest.raises(ValueError, match="refusing to load"):
            store.load_model(record)
    assert outside.exists() and inside.exists()


def test_unstorable_model_is_rejected_before_anything_is_written(store: EvaluationStore) -> None:
    with pytest.raises(serialize.SerializationError, match="Tanh"):
        store.put(FP, (1,), {}, nn.Sequential(nn.Linear(2, 2), nn.Tanh()), seconds=0.0)
    assert store.get(FP, (1,)) is None
    assert list((store.root / "checkpoints").rglob("*.*")) == []


class _Trap:
    """Unpickling this touches a marker file: proof that something ran code from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _as_legacy_row(store: EvaluationStore, record: StepRecord, marker: Path) -> Path:
    """Turn a stored step into what an earlier version wrote: a row pointing to a pickled ``.pt`` file."""
    legacy = record.checkpoint.with_suffix(".pt")
    torch.save(_Trap(marker), legacy)
    record.checkpoint.unlink()
    with store._write() as conn:
        conn.execute("UPDATE steps SET checkpoint = ? WHERE fingerprint = ? AND scheme = ?",
                     (legacy.relative_to(store.root).as_posix(), record.fingerprint,
                      ",".join(map(str, record.scheme))))
    return legacy


def test_legacy_pickle_checkpoint_is_refused_and_recomputed(store: EvaluationStore, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_Trap(tmp_path / "live")))
    assert (tmp_path / "live").exists()  # the trap works: loading the legacy file would create the marker
    store.put(FP, (1,), {"acc": 0.5}, small_model(), seconds=1.0)
    legacy = _as_legacy_row(store, store.put(FP, (1, 2), {"acc": 0.4}, small_model(), seconds=1.0), marker)

    old = store.get(FP, (1, 2))
    assert old.checkpoint == legacy and old.metrics == {"acc": 0.4}
    with pytest.raises(CheckpointError, match="pickle written by an earlier automc version.*never loaded.*recomputed"):
        store.load_model(old)
    assert not marker.exists() and not legacy.exists()
    assert store.get(FP, (1, 2)) is None
    assert store.longest_prefix(FP, (1, 2)).scheme == (1,)  # the caller recomputes the step from here

    model = small_model(fill=0.3)
    fresh = store.put(FP, (1, 2), {"acc": 0.45}, model, seconds=1.0)
    assert fresh.checkpoint.suffix == ".safetensors"
    torch.testing.assert_close(store.load_model(store.get(FP, (1, 2)))(INPUT), model(INPUT), rtol=0, atol=0)
    assert not marker.exists()


def test_put_over_a_legacy_row_removes_the_pickle(store: EvaluationStore, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    legacy = _as_legacy_row(store, store.put(FP, (1,), {}, small_model(), seconds=1.0), marker)
    fresh = store.put(FP, (1,), {}, small_model(), seconds=1.0)
    assert not legacy.exists() and fresh.checkpoint.exists()
    assert list(fresh.checkpoint.parent.iterdir()) == [fresh.checkpoint]
    store.load_model(fresh)
    assert not marker.exists()


def test_store_copied_to_another_root_loads_the_same_models(store: EvaluationStore, tmp_path: Path) -> None:
    """Checkpoints are data: a copied store (another machine) replays the same models bit for bit."""
    models = {(1,): small_model(fill=0.1), (1, 2): small_model(fill=0.2)}
    for scheme, model in models.items():
        store.put(FP, scheme, {"n": len(scheme)}, model, seconds=0.0)
    store.close()
    copy = tmp_path / "elsewhere"
    shutil.copytree(store.root, copy)
    with EvaluationStore(copy) as other:
        for scheme, model in models.items():
            record = other.get(FP, scheme)
            assert record.checkpoint.is_relative_to(other.root)
            torch.testing.assert_close(other.load_model(record)(INPUT), model(INPUT), rtol=0, atol=0)


def test_describe_and_fingerprints(store: EvaluationStore) -> None:
    store.describe(FP, {"task": "cifar10", "seed": 0})
    store.describe(FP, {"task": "cifar10", "seed": 0, "code": "v2"})  # upsert
    store.describe(OTHER_FP, {"task": "cifar100"})
    records = [store.put(FP, (i,), {}, small_model(), seconds=0.0) for i in range(3)]
    store.put("undescribed", (1,), {}, small_model(), seconds=0.0)

    listing = {entry["fingerprint"]: entry for entry in store.fingerprints()}
    assert set(listing) == {FP, OTHER_FP, "undescribed"}
    assert listing[FP]["description"] == {"task": "cifar10", "seed": 0, "code": "v2"}
    assert listing[FP]["steps"] == 3
    assert listing[FP]["bytes"] == sum(r.checkpoint.stat().st_size for r in records) > 0
    assert listing[FP]["last_used"] >= max(r.created for r in records)
    assert listing[OTHER_FP]["steps"] == 0 and listing[OTHER_FP]["bytes"] == 0
    assert listing["undescribed"]["description"] == {}
    with pytest.raises(ValueError, match="description must be a dict"):
        store.describe(FP, "cifar10")


def test_clear_one_fingerprint(store: EvaluationStore) -> None:
    mine = [store.put(FP, s, {}, small_model(), seconds=0.0) for s in [(1,), (1, 2), (3,)]]
    theirs = [store.put(OTHER_FP, s, {}, small_model(), seconds=0.0) for s in [(1,), (4,)]]
    store.describe(FP, {"task": "cifar10"})

    assert store.clear(FP) == 3
    assert store.records(FP) == []
    assert not any(r.checkpoint.exists() for r in mine)
    assert not (store.root / "checkpoints" / FP[:16]).exists()
    assert [r.scheme for r in store.records(OTHER_FP)] == [(1,), (4,)]
    for record in theirs:
        store.load_model(record)
    assert [entry["fingerprint"] for entry in store.fingerprints()] == [OTHER_FP]
    assert store.clear(FP) == 0

    # and the fingerprint can be filled again afterwards
    store.put(FP, (1,), {}, small_model(), seconds=0.0)
    store.load_model(store.get(FP, (1,)))


def test_clear_everything(store: EvaluationStore) -> None:
    store.put(FP, (1,), {}, small_model(), seconds=0.0)
    store.put(OTHER_FP, (1,), {}, small_model(), seconds=0.0)
    for name in ("orphan.safetensors", "legacy-orphan.pt"):
        (store.root / "checkpoints" / FP[:16] / name).write_bytes(b"left by a crash or an earlier version")
    assert store.clear() == 2
    assert store.fingerprints() == []
    assert list((store.root / "checkpoints").rglob("*")) == []


def test_store_pickles_to_its_location(store: EvaluationStore) -> None:
    store.put(FP, (1,), {}, small_model(), seconds=0.0)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.root == store.root
    assert clone.get(FP, (1,)) == store.get(FP, (1,))
    clone.close()


# ---------------------------------------------------------------------- multiple processes


def _concurrent_writer(store: EvaluationStore, worker: int, barrier) -> None:
    """Put 20 schemes of its own and 5 shared ones, interleaved; model parameters are filled with `worker`."""
    barrier.wait()
    for i in range(20):
        store.put(FP, (worker, i), {"worker": worker}, small_model(fill=worker), seconds=0.01)
        if i % 4 == 0:
            store.put(FP, (99, i // 4), {"worker": worker}, small_model(fill=worker), seconds=0.01)
    store.close()


def test_two_processes_share_one_root(store: EvaluationStore) -> None:
    store.describe(FP, {"task": "concurrency"})  # the parent holds an open connection while workers run
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_concurrent_writer, args=(store, w, barrier)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
        assert process.exitcode == 0

    records = store.records(FP)
    expected = {(w, i) for w in (1, 2) for i in range(20)} | {(99, j) for j in range(5)}
    assert {r.scheme for r in records} == expected and len(records) == 45
    for record in records:
        model = store.load_model(record)
        # the row and the file always come from the same writer, even for the shared keys
        assert all(torch.all(p == record.metrics["worker"]) for p in model.parameters())
    assert temp_files(store) == []
    assert store.fingerprints()[0]["steps"] == 45


def _forked_child(store: EvaluationStore, model: nn.Module) -> None:
    assert store.get(FP, (1,)) is not None  # reads through a fresh connection, not the parent's
    store.put(FP, (2,), {"from": "child"}, model, seconds=0.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_opens_its_own_connection(store: EvaluationStore) -> None:
    store.put(FP, (1,), {}, small_model(), seconds=0.0)  # the parent's connection is open now
    child = multiprocessing.get_context("fork").Process(target=_forked_child, args=(store, small_model()))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert store.get(FP, (2,)).metrics == {"from": "child"}
    store.put(FP, (3,), {}, small_model(), seconds=0.0)  # and the parent's connection still works
    assert [r.scheme for r in store.records(FP)] == [(1,), (2,), (3,)]
