"""File names inside the artifacts that one component writes and another reads.

One place for them, so that renaming one cannot leave a reader looking for the old name.
(The layout of a pushed version is the registry's: components/common/registry.py.)
"""

from __future__ import annotations

STATS_FILE = "FeatureStats.pb"  # validate's statistics; push keeps them with a version
SCHEMA_FILE = "schema.pbtxt"  # validate's schema; push keeps it with a version
ANOMALIES_FILE = "SchemaDiff.pb"  # validate's TFDV anomalies
ANOMALIES_JSON = "anomalies.json"  # validate's anomalies, read by run-local's report
RAW_EVAL_FILE = "eval_raw.tfrecord"  # transform's raw eval rows: evaluate, push's canary
SPLIT_FILE = "split.json"  # transform's row counts per split, read by train
EVALUATION_JSON = "evaluation.json"  # evaluate's metrics, read by the gate and push
BLESSED = "BLESSED"  # the gate's marker files: one of the two is written
NOT_BLESSED = "NOT_BLESSED"
BLESSING_JSON = "blessing.json"  # the gate's decision, read by push
PUSHED = "PUSHED"  # push's marker files: one of the two is written
NOT_PUSHED = "NOT_PUSHED"
PUSH_JSON = "push.json"  # push's record, read by run-local's report
