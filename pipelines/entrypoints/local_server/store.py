"""The local endpoint's state: one SQLite file (WAL) under the state folder.

Every resource is kept as the JSON the API answers for it (``kfp_json.to_json`` of its
``kfp_server_api`` model) plus the columns the server looks things up by. What the API
does not show lives in columns of its own: a run's pipeline spec snapshot (for runs of a
pipeline version the spec is copied at creation, so deleting the version later does not
break a queued run) and a recurring run's schedule pointer (the last slot it fired and
the time its schedule counts from), so that a restart continues the schedule.

One connection, shared by the HTTP threads, the executor and the scheduler, guarded by a
re-entrant lock; ``with store.lock:`` makes a check-then-write atomic, for the other
threads and for a crash: the outermost hold is one SQLite transaction, committed when it
is left (also when it is left by an exception, as the statements were before), so that a
kill at any moment leaves all of a block's writes or none (an upload's pipeline and its
first version). ``synchronous=FULL``: a commit is on disk before the request is answered.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any, Iterable, Optional

from kfp_server_api import models as m

from kfp_ct.pipelines.entrypoints import kfp_json

SCHEMA_VERSION = 1
DB_NAME = "state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pipelines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    name TEXT UNIQUE NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    pipeline_id TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (pipeline_id, name));
CREATE TABLE IF NOT EXISTS experiments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    name TEXT UNIQUE NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    experiment_id TEXT NOT NULL, recurring_run_id TEXT, state TEXT NOT NULL,
    spec TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE INDEX IF NOT EXISTS runs_recurring ON runs (recurring_run_id);
CREATE TABLE IF NOT EXISTS recurring_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    experiment_id TEXT NOT NULL, spec TEXT NOT NULL, doc TEXT NOT NULL,
    last_slot REAL, anchor REAL NOT NULL);
"""

# kind -> (table, model class)
_KINDS = {"pipeline": ("pipelines", m.V2beta1Pipeline),
          "version": ("versions", m.V2beta1PipelineVersion),
          "experiment": ("experiments", m.V2beta1Experiment),
          "run": ("runs", m.V2beta1Run),
          "recurring_run": ("recurring_runs", m.V2beta1RecurringRun)}
ACTIVE_STATES = ("PENDING", "RUNNING")


class StoreError(Exception):
    """The state file cannot be used (another schema version, or corrupt)."""


class _TransactionLock:
    """A re-entrant lock whose outermost hold is one transaction of ``db``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self.db: Optional[sqlite3.Connection] = None

    def __enter__(self) -> "_TransactionLock":
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1 and self.db is not None and not self.db.in_transaction:
            try:
                self.db.execute("BEGIN")
            except BaseException:
                self._depth -= 1
                self._lock.release()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._depth == 1 and self.db is not None and self.db.in_transaction:
                self.db.execute("COMMIT")
        finally:
            self._depth -= 1
            self._lock.release()


class Store:
    """SQLite-backed resources of the local endpoint.

    Args:
        state_dir: The state folder (created); the database is ``state.sqlite`` in it.

    Raises:
        StoreError: the file holds another schema version.
    """

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, DB_NAME)
        self.lock = _TransactionLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            self._db.close()
            raise StoreError(f"{self.path} has schema version {row[0]}; this kfp-ct reads "
                             f"version {SCHEMA_VERSION}: use another --state-dir")
        self.lock.db = self._db

    def close(self) -> None:
        """Closes the database."""
        with self.lock:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
            self.lock.db = None
            self._db.close()

    # ------------------------------------------------------------------ generic

    def _exec(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self.lock:
            return self._db.execute(sql, tuple(args))

    @staticmethod
    def _load(kind: str, doc: str) -> Any:
        return kfp_json.from_json(json.loads(doc), _KINDS[kind][1], kind)

    def get(self, kind: str, item_id: str) -> Optional[Any]:
        """The model with this id, or None."""
        table = _KINDS[kind][0]
        row = self._exec(f"SELECT doc FROM {table} WHERE id=?", (item_id,)).fetchone()
        return None if row is None else self._load(kind, row[0])

    def list(self, kind: str, where: str = "", args: Iterable[Any] = ()) -> list:
        """Models of a kind, oldest first, optionally ``WHERE <where>``."""
        table = _KINDS[kind][0]
        sql = f"SELECT doc FROM {table}" + (f" WHERE {where}" if where else "") + " ORDER BY seq"
        return [self._load(kind, row[0]) for row in self._exec(sql, args).fetchall()]

    def count(self, kind: str, where: str = "", args: Iterable[Any] = ()) -> int:
        """How many of a kind (``WHERE <where>``)."""
        table = _KINDS[kind][0]
        sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return int(self._exec(sql, args).fetchone()[0])

    def delete(self, kind: str, item_id: str) -> bool:
        """Deletes one; whether it existed."""
        table = _KINDS[kind][0]
        return self._exec(f"DELETE FROM {table} WHERE id=?", (item_id,)).rowcount > 0

    # ---------------------------------------------------------------- by kind

    def add_pipeline(self, pipeline: m.V2beta1Pipeline) -> None:
        """Stores a new pipeline (its display name must be free)."""
        self._exec("INSERT INTO pipelines (id, name, doc) VALUES (?, ?, ?)",
                   (pipeline.pipeline_id, pipeline.display_name,
                    json.dumps(kfp_json.to_json(pipeline))))

    def pipeline_by_name(self, name: str) -> Optional[m.V2beta1Pipeline]:
        """The pipeline with this display name, or None."""
        row = self._exec("SELECT doc FROM pipelines WHERE name=?", (name,)).fetchone()
        return None if row is None else self._load("pipeline", row[0])

    def add_version(self, version: m.V2beta1PipelineVersion) -> None:
        """Stores a new version (its display name must be free within the pipeline)."""
        self._exec("INSERT INTO versions (id, pipeline_id, name, doc) VALUES (?, ?, ?, ?)",
                   (version.pipeline_version_id, version.pipeline_id, version.display_name,
                    json.dumps(kfp_json.to_json(version))))

    def version_named(self, pipeline_id: str, name: str) -> bool:
        """Whether the pipeline has a version with this display name."""
        return self.count("version", "pipeline_id=? AND name=?", (pipeline_id, name)) > 0

    def add_experiment(self, experiment: m.V2beta1Experiment) -> None:
        """Stores a new experiment (its display name must be free)."""
        self._exec("INSERT INTO experiments (id, name, doc) VALUES (?, ?, ?)",
                   (experiment.experiment_id, experiment.display_name,
                    json.dumps(kfp_json.to_json(experiment))))

    def save_experiment(self, experiment: m.V2beta1Experiment) -> None:
        """Rewrites a stored experiment's document."""
        self._exec("UPDATE experiments SET doc=? WHERE id=?",
                   (json.dumps(kfp_json.to_json(experiment)), experiment.experiment_id))

    def experiment_by_name(self, name: str) -> Optional[m.V2beta1Experiment]:
        """The experiment with this display name, or None."""
        row = self._exec("SELECT doc FROM experiments WHERE name=?", (name,)).fetchone()
        return None if row is None else self._load("experiment", row[0])

    def add_run(self, run: m.V2beta1Run, spec: Any) -> None:
        """Stores a new run with the pipeline spec it will execute."""
        self._exec("INSERT INTO runs (id, experiment_id, recurring_run_id, state, spec, doc) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (run.run_id, run.experiment_id, run.recurring_run_id, run.state,
                    json.dumps(spec), json.dumps(kfp_json.to_json(run))))

    def save_run(self, run: m.V2beta1Run) -> None:
        """Rewrites a stored run (its state and document)."""
        self._exec("UPDATE runs SET state=?, doc=? WHERE id=?",
                   (run.state, json.dumps(kfp_json.to_json(run)), run.run_id))

    def run_spec(self, run_id: str) -> Optional[Any]:
        """The pipeline spec a run executes."""
        row = self._exec("SELECT spec FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def next_pending_run(self) -> Optional[m.V2beta1Run]:
        """The oldest PENDING run, or None."""
        row = self._exec("SELECT doc FROM runs WHERE state='PENDING' ORDER BY seq LIMIT 1"
                         ).fetchone()
        return None if row is None else self._load("run", row[0])

    def active_runs_of(self, recurring_run_id: str) -> int:
        """How many runs of a recurring run are PENDING or RUNNING."""
        return self.count("run", "recurring_run_id=? AND state IN (?, ?)",
                          (recurring_run_id, *ACTIVE_STATES))

    def add_recurring_run(self, recurring: m.V2beta1RecurringRun, spec: Any,
                          anchor: float) -> None:
        """Stores a new recurring run; its schedule counts from ``anchor`` (epoch s)."""
        self._exec("INSERT INTO recurring_runs (id, experiment_id, spec, doc, last_slot, "
                   "anchor) VALUES (?, ?, ?, ?, NULL, ?)",
                   (recurring.recurring_run_id, recurring.experiment_id, json.dumps(spec),
                    json.dumps(kfp_json.to_json(recurring)), anchor))

    def set_recurring_spec(self, recurring_run_id: str, spec: Any) -> None:
        """Replaces the pipeline spec a recurring run's next runs execute (its update)."""
        self._exec("UPDATE recurring_runs SET spec=? WHERE id=?",
                   (json.dumps(spec), recurring_run_id))

    def save_recurring_run(self, recurring: m.V2beta1RecurringRun) -> None:
        """Rewrites a stored recurring run's document."""
        self._exec("UPDATE recurring_runs SET doc=? WHERE id=?",
                   (json.dumps(kfp_json.to_json(recurring)), recurring.recurring_run_id))

    def recurring_spec(self, recurring_run_id: str) -> Optional[Any]:
        """The pipeline spec a recurring run's runs execute."""
        row = self._exec("SELECT spec FROM recurring_runs WHERE id=?",
                         (recurring_run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def schedule_of(self, recurring_run_id: str) -> Optional[tuple]:
        """``(last_slot, anchor)`` in epoch seconds (last_slot None before the first)."""
        return self._exec("SELECT last_slot, anchor FROM recurring_runs WHERE id=?",
                          (recurring_run_id,)).fetchone()

    def set_schedule(self, recurring_run_id: str, last_slot: Optional[float],
                     anchor: Optional[float] = None) -> None:
        """Moves a recurring run's schedule pointer (and its anchor, if given)."""
        if anchor is None:
            self._exec("UPDATE recurring_runs SET last_slot=? WHERE id=?",
                       (last_slot, recurring_run_id))
        else:
            self._exec("UPDATE recurring_runs SET last_slot=?, anchor=? WHERE id=?",
                       (last_slot, anchor, recurring_run_id))
