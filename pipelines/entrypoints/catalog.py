"""The pipelines this package ships, by the short names the CLI and the client use.

    training       kfp-ct-training       validate -> transform -> train -> evaluate -> gate -> push
    training-gpu   kfp-ct-training-gpu   the same, training in the GPU image on one GPU
    training-tpu   kfp-ct-training-tpu   the same, training in the TPU image on a TPU slice
    training-multiworker  kfp-ct-training-multiworker  the same, training on several
                   workers (a Kubeflow TFJob; cluster only, gs:// pipeline root)
    training-kserve  kfp-ct-training-kserve  the same, then a rollout: the pushed version
                   served by a KServe InferenceService, as a judged canary first (cluster only)
    monitoring     kfp-ct-monitoring     drift check -> retraining trigger
    data           kfp-ct-data           validate -> transform

``compile.py`` writes every one of them; ``kfp-ct upload`` compiles one and uploads it
as a new version named by :func:`version_name`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import tempfile
from typing import Any, Callable

from kfp_ct.components import __version__
from kfp_ct.components.common.errors import KfpCtError


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One shipped pipeline.

    Attributes:
        name: Short name (``training``).
        file_stem: File name of its compiled YAML without ``.yaml`` (``training_pipeline``).
        display_name: Its ``pipelineInfo.name`` and the name it is uploaded under.
        build: Returns the ``@dsl.pipeline`` function for cluster settings
            (``kfp_ct.pipelines.cluster.Settings``; None: the defaults). Imports kfp and the
            components.
    """

    name: str
    file_stem: str
    display_name: str
    build: Callable[[Any], Any]

    def load(self, settings: Any = None) -> Any:
        """The pipeline function, with the default cluster settings unless given."""
        return self.build(settings)


def _settings(settings: Any) -> Any:
    from kfp_ct.pipelines import cluster

    return cluster.DEFAULT if settings is None else settings


def _training(variant: str) -> Callable[[Any], Any]:
    def build(settings: Any = None) -> Any:
        from kfp_ct.pipelines import training

        if settings is None:  # the module's own objects (what tests and kfp.local use)
            return {"cpu": training.training_pipeline, "gpu": training.training_pipeline_gpu,
                    "tpu": training.training_pipeline_tpu,
                    "multiworker": training.training_pipeline_multiworker}[variant]
        return training.make_training_pipeline(variant, _settings(settings))

    return build


def _kserve(settings: Any = None) -> Any:
    from kfp_ct.pipelines import training

    if settings is None:
        return training.training_pipeline_kserve
    return training.make_kserve_pipeline(_settings(settings))


def _monitoring(settings: Any = None) -> Any:
    from kfp_ct.pipelines import monitoring

    if settings is None:
        return monitoring.monitoring_pipeline
    return monitoring.make_monitoring_pipeline(settings)


def _data(settings: Any = None) -> Any:
    from kfp_ct.pipelines import data

    if settings is None:
        return data.data_pipeline
    return data.make_data_pipeline(settings)


CATALOG: dict[str, CatalogEntry] = {e.name: e for e in (
    CatalogEntry("training", "training_pipeline", "kfp-ct-training", _training("cpu")),
    CatalogEntry("training-gpu", "training_pipeline_gpu", "kfp-ct-training-gpu",
                 _training("gpu")),
    CatalogEntry("training-tpu", "training_pipeline_tpu", "kfp-ct-training-tpu",
                 _training("tpu")),
    CatalogEntry("training-multiworker", "training_pipeline_multiworker",
                 "kfp-ct-training-multiworker", _training("multiworker")),
    CatalogEntry("training-kserve", "training_pipeline_kserve", "kfp-ct-training-kserve",
                 _kserve),
    CatalogEntry("monitoring", "monitoring_pipeline", "kfp-ct-monitoring", _monitoring),
    CatalogEntry("data", "data_pipeline", "kfp-ct-data", _data),
)}


def components() -> dict[str, Any]:
    """The shipped components by the stem of their compiled YAML (``build/components/``),
    the one list compile.py and the component READMEs use. Imports kfp and the wrappers
    only (no TensorFlow)."""
    from kfp_ct.components.drift.component import drift_check
    from kfp_ct.components.evaluate.component import evaluate
    from kfp_ct.components.gate.component import gate
    from kfp_ct.components.notify.component import announce_failure
    from kfp_ct.components.push.component import push
    from kfp_ct.components.retrain.component import retrain_trigger
    from kfp_ct.components.rollout.component import rollout
    from kfp_ct.components.train.component import train, train_gpu, train_tfjob, train_tpu
    from kfp_ct.components.transform.component import transform
    from kfp_ct.components.validate.component import validate

    return {"validate": validate, "transform": transform, "train": train,
            "train_gpu": train_gpu, "train_tpu": train_tpu, "train_tfjob": train_tfjob,
            "evaluate": evaluate, "gate": gate, "push": push, "drift_check": drift_check,
            "retrain_trigger": retrain_trigger, "rollout": rollout,
            "announce_failure": announce_failure}


def entry(name: str) -> CatalogEntry:
    """The catalog entry for a short name or a display name (``kfp-ct-training``)."""
    for item in CATALOG.values():
        if name in (item.name, item.display_name, item.file_stem):
            return item
    raise KfpCtError(f"unknown pipeline {name!r}; the shipped pipelines are "
                     f"{', '.join(CATALOG)} (or give a compiled YAML file)")


def compile_to(name: str, path: str) -> str:
    """Compiles a shipped pipeline into ``path`` (KFP IR YAML); returns the path."""
    from kfp import compiler

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    compiler.Compiler().compile(entry(name).load(), package_path=path)
    return path


def compiled_text(name: str) -> str:
    """The compiled YAML of a shipped pipeline, as text."""
    with tempfile.TemporaryDirectory(prefix="kfp-ct-compile-") as tmp:
        path = compile_to(name, os.path.join(tmp, "pipeline.yaml"))
        with open(path) as fh:
            return fh.read()


def git_commit(folder: str | None = None) -> tuple[str, bool] | None:
    """``(short commit, dirty)`` of the checkout holding this package, or None.

    Dirty means tracked files differ from the commit (untracked files do not count).
    """
    here = folder or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=8", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0 or not commit.stdout.strip():
            return None
        status = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())


def version_name(spec_text: str, folder: str | None = None) -> str:
    """The version name an upload gets: the package version, the commit, the spec.

    ``0.1.0-g1a2b3c4d`` on a clean checkout; ``0.1.0-g1a2b3c4d-dirty-<spec hash>`` when
    tracked files changed since the commit; ``0.1.0-<spec hash>`` outside git. The spec
    hash (8 hex digits of the compiled YAML's SHA-256) makes two different uncommitted
    builds two versions, and the same build the same version.
    """
    digest = hashlib.sha256(spec_text.encode()).hexdigest()[:8]
    git = git_commit(folder)
    if git is None:
        return f"{__version__}-{digest}"
    commit, dirty = git
    return f"{__version__}-g{commit}" + (f"-dirty-{digest}" if dirty else "")
