"""A local push destination inside a Kubernetes pod is refused: the pod's disk goes with it.

The rule (components/common/podenv.py): a task is in a pod when KUBERNETES_SERVICE_HOST is
set (the kubelet sets it in every container); there a local path is refused unless it
lies under a folder named in KFP_CT_DURABLE_PATHS (a mounted PersistentVolumeClaim).
"""

import pytest

from kfp_ct.components.common import podenv
from kfp_ct.components.validate import preflight

POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}


def test_outside_a_pod_a_local_destination_is_fine(tmp_path):
    podenv.check_durable(str(tmp_path / "serving"), environ={})
    assert not podenv.in_pod({})


def test_in_a_pod_a_local_destination_is_refused_naming_the_path_and_the_ways_out():
    with pytest.raises(podenv.EphemeralDestinationError) as err:
        podenv.check_durable("serving/penguins", environ=POD)
    message = str(err.value)
    assert "push_destination 'serving/penguins' is a local path" in message
    assert "KUBERNETES_SERVICE_HOST" in message and "lost with the pod" in message
    assert "gs://" in message and "KFP_CT_DURABLE_PATHS" in message


def test_in_a_pod_gcs_and_declared_volumes_are_accepted():
    podenv.check_durable("gs://bucket/serving/penguins", environ=POD)
    env = {**POD, "KFP_CT_DURABLE_PATHS": "/mnt/models:/data"}
    podenv.check_durable("/mnt/models/penguins", environ=env)
    podenv.check_durable("/mnt/models", environ=env)
    with pytest.raises(podenv.EphemeralDestinationError):
        podenv.check_durable("/mnt/models-old/penguins", environ=env)  # not under it


def test_preflight_refuses_it_before_any_data_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KFP_CT_DURABLE_PATHS", raising=False)
    with pytest.raises(podenv.EphemeralDestinationError, match="lost with the pod"):
        preflight.check_destination(str(tmp_path / "serving"))
    assert not (tmp_path / "serving").exists()


def test_push_refuses_it_too(monkeypatch, tmp_path):
    from kfp_ct.components.push.logic import _check_destination

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KFP_CT_DURABLE_PATHS", raising=False)
    with pytest.raises(podenv.EphemeralDestinationError, match="lost with the pod"):
        _check_destination(str(tmp_path / "serving"))
    assert not (tmp_path / "serving").exists()


def test_train_refuses_a_local_checkpoint_folder_in_a_pod(monkeypatch, tmp_path):
    from kfp_ct.components.train.logic import run_train

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KFP_CT_DURABLE_PATHS", raising=False)
    problem = ('{"label": "species", "task": "classification", "numeric": ["bill_length_mm"],'
               ' "categorical": []}')
    with pytest.raises(podenv.EphemeralDestinationError,
                       match="the train checkpoint folder '.*/ckpt' is a local path"):
        run_train(str(tmp_path / "graph"), str(tmp_path / "examples"), problem,
                  str(tmp_path / "model"), train_steps=5, checkpoint_dir=str(tmp_path / "ckpt"))
