"""The evaluation store: every compression step computed once, replayed from disk after that.

Why it exists: each step of a compression scheme really compresses a PyTorch model, which takes
minutes, while agents revisit the same schemes and, far more often, the same *prefixes* of schemes.
The store caches each step's metrics together with the compressed model it produced, so evaluating
``(2010, 2031, 2005)`` after ``(2010, 2031)`` only computes the last step, and a stored step replays
by loading one file.

Key: ``(fingerprint, scheme)``. The fingerprint identifies everything a step's result depends on
besides the scheme (task, data, pre-trained model, search grid, seed, code version...); the caller
computes it, preferably as a hex digest, and may record what it means with :meth:`describe`. The
scheme is the tuple of strategy ids applied so far, stored as the ids joined with ``","``.

Layout on disk (root defaults to ``automc_home() / "store"``)::

    <root>/index.sqlite                                     one row per stored step (+ WAL side files)
    <root>/checkpoints/<fp16>/<sha1(scheme)>.safetensors    the whole model after that step

``<fp16>`` is the first 16 hex digits of the fingerprint (of its sha256 if it is not a hex digest,
so a fingerprint can never name a path outside the store).

Checkpoints (:mod:`automc_env.serialize`): one safetensors file per step whose tensors are the
model's state_dict and whose metadata describes its module tree in JSON, rebuilt on load from an
allow-list of module types. Loading a checkpoint executes no code from the file, so a store can be
copied between machines and shared like any data. ``.pt`` files that a previous version pickled
with ``torch.save`` are never unpickled: :meth:`load_model` treats them as missing
(``CheckpointError``, row removed, the step is recomputed).

Atomicity: :meth:`put` writes the checkpoint to a uniquely named temporary file in the final
directory, fsyncs it, then, holding the index's write lock, renames it over the final name
(``os.replace``) and inserts the index row in the same short transaction. A crash at any point
leaves either the old state or the new state and never a row pointing to a missing or partial file;
the worst leftover is an unreferenced file, which the next ``put`` of that key overwrites.

Concurrency: several processes may share one root. SQLite runs in WAL mode with a generous busy
timeout and every write is one short ``BEGIN IMMEDIATE`` transaction. Two processes may compute and
``put`` the same key: the last writer wins, and because the rename and the row change happen under
the same lock, the row's metrics always describe the file it points to. Connections are opened
lazily per process, so a store object may be handed to forked or spawned workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from automc_env import serialize
from automc_env.home import automc_home

__all__ = ["CheckpointError", "EvaluationStore", "StepRecord"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fingerprints (
        fingerprint TEXT PRIMARY KEY,
        description TEXT NOT NULL,      -- JSON object
        updated     REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS steps (
        fingerprint TEXT    NOT NULL,
        scheme      TEXT    NOT NULL,   -- ids joined with ",", e.g. "2010,2031"
        length      INTEGER NOT NULL,
        metrics     TEXT    NOT NULL,   -- JSON object
        checkpoint  TEXT    NOT NULL,   -- path relative to the store root
        bytes       INTEGER NOT NULL,
        seconds     REAL    NOT NULL,
        created     REAL    NOT NULL,
        last_used   REAL    NOT NULL,
        PRIMARY KEY (fingerprint, scheme)
    )""",
    "CREATE INDEX IF NOT EXISTS steps_by_checkpoint ON steps (checkpoint)",
)
_RECORD_COLUMNS = "fingerprint, scheme, metrics, checkpoint, seconds, created"
_HEX_FINGERPRINT = re.compile(r"[0-9a-f]{16,}")
CHECKPOINT_SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"  # pickled checkpoints of earlier versions: recognised, never loaded

# Connections inherited through fork(). SQLite must not use them in the child, and closing them
# there could release file locks the parent holds, so they are parked here and never touched.
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


class CheckpointError(RuntimeError):
    """A stored checkpoint is missing or unreadable; its index row has been removed, recompute it."""


@dataclass(frozen=True)
class StepRecord:
    """One stored step: the metrics after applying ``scheme`` and where the resulting model lives."""

    fingerprint: str
    scheme: tuple[int, ...]  # non-empty
    metrics: dict  # JSON-serialisable; the store does not interpret it
    checkpoint: Path  # absolute path of the stored model file
    seconds: float  # compute seconds the step took when it was computed
    created: float  # unix time


class EvaluationStore:
    """Cache of compression steps keyed by ``(fingerprint, scheme)``; see the module docstring."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root: Path = Path(root if root is not None else automc_home() / "store").expanduser().resolve()
        self._checkpoints = self.root / "checkpoints"
        self._checkpoints.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        with self._locked():  # create index.sqlite now, so a bad root fails here and not mid-run
            pass

    # ------------------------------------------------------------------ lookups

    def get(self, fingerprint: str, scheme: Sequence[int]) -> StepRecord | None:
        """The stored record for exactly ``scheme``, or None if it was never computed."""
        fingerprint = _check_fingerprint(fingerprint)
        key = _scheme_key(_check_scheme(scheme))
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM steps WHERE fingerprint = ? AND scheme = ?",
                (fingerprint, key),
            ).fetchone()
            if row is None:
                return None
            self._touch(conn, fingerprint, [key])
        return self._record(row)

    def longest_prefix(self, fingerprint: str, scheme: Sequence[int]) -> StepRecord | None:
        """The record of the longest stored non-empty prefix of ``scheme`` (itself included).

        This is where a new evaluation starts: only the steps after that prefix need computing.
        All prefixes are looked up in one query.
        """
        fingerprint = _check_fingerprint(fingerprint)
        ids = _check_scheme(scheme)
        keys = [_scheme_key(ids[:n]) for n in range(1, len(ids) + 1)]
        with self._locked() as conn:
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM steps WHERE fingerprint = ? "
                f"AND scheme IN ({','.join('?' * len(keys))}) ORDER BY length DESC LIMIT 1",
                (fingerprint, *keys),
            ).fetchone()
            if row is None:
                return None
            self._touch(conn, fingerprint, [row[1]])
        return self._record(row)

    def records(self, fingerprint: str) -> list[StepRecord]:
        """Every stored step of one fingerprint, ordered by scheme length, then scheme."""
        fingerprint = _check_fingerprint(fingerprint)
        with self._locked() as conn:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM steps WHERE fingerprint = ?", (fingerprint,)
            ).fetchall()
        return sorted((self._record(row) for row in rows), key=lambda r: (len(r.scheme), r.scheme))

    def fingerprints(self) -> list[dict]:
        """One summary per known fingerprint, most recently used first, for listing and cleanup.

        Keys: ``fingerprint``, ``description`` (what :meth:`describe` recorded, else ``{}``),
        ``steps``, ``bytes`` (checkpoint bytes on disk) and ``last_used`` (unix time).
        """
        with self._locked() as conn:
            rows = conn.execute(
                """SELECT k.fingerprint, d.description, COUNT(s.scheme), COALESCE(SUM(s.bytes), 0),
                          COALESCE(MAX(s.last_used), d.updated, 0)
                   FROM (SELECT fingerprint FROM fingerprints UNION SELECT fingerprint FROM steps) AS k
                   LEFT JOIN fingerprints AS d ON d.fingerprint = k.fingerprint
                   LEFT JOIN steps AS s ON s.fingerprint = k.fingerprint
                   GROUP BY k.fingerprint
                   ORDER BY 5 DESC, k.fingerprint"""
            ).fetchall()
        return [
            {
                "fingerprint": fingerprint,
                "description": json.loads(description) if description is not None else {},
                "steps": steps,
                "bytes": size,
                "last_used": float(last_used),
            }
            for fingerprint, description, steps, size, last_used in rows
        ]

    # ------------------------------------------------------------------ writes

    def describe(self, fingerprint: str, description: dict) -> None:
        """Remember what a fingerprint means (task, grid, seed, code version...) so listings are readable."""
        fingerprint = _check_fingerprint(fingerprint)
        text = _json_object(description, "description")
        with self._write() as conn:
            conn.execute(
                """INSERT INTO fingerprints (fingerprint, description, updated) VALUES (?, ?, ?)
                   ON CONFLICT (fingerprint) DO UPDATE
                   SET description = excluded.description, updated = excluded.updated""",
                (fingerprint, text, time.time()),
            )

    def put(
        self,
        fingerprint: str,
        scheme: Sequence[int],
        metrics: dict,
        model: torch.nn.Module,
        seconds: float,
    ) -> StepRecord:
        """Store one computed step (metrics + resulting model) atomically; replaces an existing one.

        Non-finite floats in ``metrics`` are stored as null; anything that is not plain JSON
        (str keys; str, int, float, bool, None, list, dict values) is rejected with ValueError, and
        so is a model the checkpoint format cannot store exactly (``serialize.SerializationError``:
        a module type outside ``serialize.registry()``, an unknown attribute, a hook), before
        anything is written.
        """
        fingerprint = _check_fingerprint(fingerprint)
        ids = _check_scheme(scheme)
        key = _scheme_key(ids)
        metrics_text = _json_object(metrics, "metrics")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        valid_number = isinstance(seconds, numbers.Real) and not isinstance(seconds, bool)
        if not (valid_number and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite, non-negative number, got {seconds!r}")
        relative = self._checkpoint_relpath(fingerprint, key)
        final = self.root / relative

        temp = _write_temp_checkpoint(final, model)  # slow part, outside any lock
        try:
            size = temp.stat().st_size
            now = time.time()
            with self._locked() as conn:
                conn.execute("BEGIN IMMEDIATE")
                published = existed = False
                previous = None
                try:
                    other = conn.execute(
                        "SELECT fingerprint FROM steps WHERE checkpoint = ? AND fingerprint <> ? LIMIT 1",
                        (relative, fingerprint),
                    ).fetchone()
                    if other is not None:
                        raise ValueError(
                            f"fingerprints {fingerprint!r} and {other[0]!r} share their first 16 hex "
                            f"digits and would overwrite each other's checkpoints; use full-length digests"
                        )
                    row = conn.execute(
                        "SELECT checkpoint FROM steps WHERE fingerprint = ? AND scheme = ?", (fingerprint, key)
                    ).fetchone()
                    existed = row is not None
                    previous = row[0] if existed and row[0] != relative else None
                    os.replace(temp, final)
                    published = True
                    _fsync_directory(final.parent)  # the rename is durable before the row is
                    conn.execute(
                        """INSERT OR REPLACE INTO steps (fingerprint, scheme, length, metrics, checkpoint,
                                                         bytes, seconds, created, last_used)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                        (fingerprint, key, len(ids), metrics_text, relative, size, float(seconds), now, now),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    if published and not existed:
                        final.unlink(missing_ok=True)  # no row will ever point to it
                    raise
                if previous is not None:  # the key's old file under another name (a legacy pickle)
                    try:
                        self._own_checkpoint(self.root / previous).unlink(missing_ok=True)
                    except ValueError:
                        pass  # not a file this store wrote: leave it alone
        finally:
            temp.unlink(missing_ok=True)  # already renamed on success; leftovers on failure
        return StepRecord(fingerprint, ids, json.loads(metrics_text), final, float(seconds), now)

    def clear(self, fingerprint: str | None = None) -> int:
        """Forget all steps (or one fingerprint's steps and description); returns the number of steps removed."""
        if fingerprint is not None:
            fingerprint = _check_fingerprint(fingerprint)
        with self._write() as conn:
            if fingerprint is None:
                rows = conn.execute("SELECT checkpoint FROM steps").fetchall()
                conn.execute("DELETE FROM steps")
                conn.execute("DELETE FROM fingerprints")
                # With no rows left, every checkpoint (including orphans from crashed puts) is garbage.
                files = {path for suffix in (CHECKPOINT_SUFFIX, LEGACY_SUFFIX)
                         for path in self._checkpoints.glob(f"*/*{suffix}")}
            else:
                rows = conn.execute("SELECT checkpoint FROM steps WHERE fingerprint = ?", (fingerprint,)).fetchall()
                conn.execute("DELETE FROM steps WHERE fingerprint = ?", (fingerprint,))
                conn.execute("DELETE FROM fingerprints WHERE fingerprint = ?", (fingerprint,))
                files = set()
            files.update(self.root / relative for (relative,) in rows)
            # Deleted while still holding the write lock, so no concurrent put can publish a file we then
            # remove. If the commit failed afterwards, load_model would notice and drop the stale rows.
            for path in files:
                path.unlink(missing_ok=True)
            for directory in {path.parent for path in files}:
                try:
                    directory.rmdir()
                except OSError:
                    pass  # not empty: other fingerprints' files or a put in progress
        return len(rows)

    # ------------------------------------------------------------------ models

    def load_model(self, record: StepRecord, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """Load the model stored for ``record`` (no code from the file runs; see the module docstring).

        Only files under this store's own checkpoint directory are read; any other path raises
        ValueError. A missing, unreadable or invalid file, or a pickled ``.pt`` checkpoint of an
        earlier version (never unpickled), raises CheckpointError after its index row and file are
        removed, so the next lookup recomputes the step instead of failing again. A model that
        loads but cannot move to ``map_location`` raises that device error unchanged.
        """
        path = self._own_checkpoint(record.checkpoint)
        if path.suffix == LEGACY_SUFFIX:
            problem = ("is a pickle written by an earlier automc version; pickles are never loaded because "
                       "unpickling runs code from the file")
        else:
            try:
                model = serialize.load_model(path, map_location=map_location)
            except FileNotFoundError:
                problem = "is missing"
            except (OSError, serialize.SerializationError) as exc:
                problem = f"cannot be loaded ({type(exc).__name__}: {exc})"
            else:
                with self._locked() as conn:
                    self._touch(conn, record.fingerprint, [_scheme_key(record.scheme)])
                return model
        self._forget(record, path)
        raise CheckpointError(
            f"checkpoint {path} of scheme {record.scheme} (fingerprint {record.fingerprint}) {problem}; "
            f"its index row was removed, so the step will be recomputed on the next lookup"
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close this process's database connection (a later call reopens one)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> EvaluationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Sent to a spawned worker: only the location travels, the worker opens its own connection.
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self._checkpoints = self.root / "checkpoints"
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn = None

    def __repr__(self) -> str:
        return f"EvaluationStore({str(self.root)!r})"

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, opened on first use, held exclusively by the calling thread."""
        if self._pid != os.getpid():  # we are in a forked child: nothing of the parent's is usable
            if self._conn is not None:
                _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None
            self._lock = threading.RLock()  # the parent's may have been held by another thread
            self._pid = os.getpid()
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            yield self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.root / "index.sqlite",
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # guarded by self._lock instead
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash never corrupts; commits stay cheap
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"the evaluation store at {self.root} has schema version {version}, this code expects "
                    f"{SCHEMA_VERSION}; use another root or delete that directory"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _touch(self, conn: sqlite3.Connection, fingerprint: str, keys: list[str]) -> None:
        """Record use, so listings can tell live fingerprints from ones worth clearing."""
        conn.executemany(
            "UPDATE steps SET last_used = ? WHERE fingerprint = ? AND scheme = ?",
            [(time.time(), fingerprint, key) for key in keys],
        )

    def _forget(self, record: StepRecord, path: Path) -> None:
        """Drop a broken step, unless another process has meanwhile stored a fresh one under the key."""
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM steps WHERE fingerprint = ? AND scheme = ? AND created = ?",
                (record.fingerprint, _scheme_key(record.scheme), record.created),
            ).rowcount
            if deleted:
                path.unlink(missing_ok=True)

    def _checkpoint_relpath(self, fingerprint: str, key: str) -> str:
        if _HEX_FINGERPRINT.fullmatch(fingerprint):
            directory = fingerprint[:16]
        else:
            directory = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        return f"checkpoints/{directory}/{hashlib.sha1(key.encode()).hexdigest()}{CHECKPOINT_SUFFIX}"

    def _own_checkpoint(self, checkpoint: str | Path) -> Path:
        """The resolved checkpoint path, if it is one this store could have written; ValueError otherwise."""
        path = Path(checkpoint).resolve()
        if not path.is_relative_to(self._checkpoints.resolve()) or path.suffix not in (CHECKPOINT_SUFFIX,
                                                                                        LEGACY_SUFFIX):
            raise ValueError(
                f"refusing to load {checkpoint}: it is not a checkpoint file under this store's directory "
                f"{self._checkpoints}"
            )
        return path

    def _record(self, row: tuple) -> StepRecord:
        fingerprint, key, metrics, relative, seconds, created = row
        return StepRecord(
            fingerprint=fingerprint,
            scheme=tuple(int(part) for part in key.split(",")),
            metrics=json.loads(metrics),
            checkpoint=self.root / relative,
            seconds=seconds,
            created=created,
        )


# ---------------------------------------------------------------------- helpers


def _check_fingerprint(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint must be a non-empty string (ideally a hex digest), got {fingerprint!r}")
    return fingerprint


def _check_scheme(scheme: Sequence[int]) -> tuple[int, ...]:
    """Validate a scheme: a non-empty sequence of non-negative integer strategy ids."""
    expected = "a scheme must be a non-empty sequence of non-negative int strategy ids, e.g. (2010, 2031)"
    if isinstance(scheme, (str, bytes)) or not isinstance(scheme, Sequence):
        raise ValueError(f"{expected}; got {type(scheme).__name__} {scheme!r}")
    if len(scheme) == 0:
        raise ValueError(f"{expected}; got an empty {type(scheme).__name__}")
    ids = []
    for position, item in enumerate(scheme):
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise ValueError(f"{expected}; item {position} of {scheme!r} is a {type(item).__name__}")
        if item < 0:
            raise ValueError(f"{expected}; item {position} of {scheme!r} is negative")
        ids.append(int(item))
    return tuple(ids)


def _scheme_key(ids: tuple[int, ...]) -> str:
    return ",".join(map(str, ids))


def _json_object(value: dict, what: str) -> str:
    """Serialise a dict as strict JSON, storing non-finite floats as null."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(_finite(value, what), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(
            f"{what} must be plain JSON (str keys; str, int, float, bool, None, list or dict values) "
            f"so it can be stored and listed; convert tensors and numpy scalars with float(): {exc}"
        ) from exc


def _finite(value: Any, what: str) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{what} key {key!r} is a {type(key).__name__}, not a str")
        return {key: _finite(item, what) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item, what) for item in value]
    return value


def _write_temp_checkpoint(final: Path, model: torch.nn.Module) -> Path:
    """Write ``model`` to a fresh, uniquely named, fsynced file next to ``final`` and return its path."""
    for attempt in range(3):
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.stem}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            handle = open(temp, "xb")
            break
        except FileNotFoundError:  # a concurrent clear() removed the empty directory; make it again
            if attempt == 2:
                raise
    try:
        with handle:
            serialize.save_model(model, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
