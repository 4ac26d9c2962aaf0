"""Where a task runs: on a Kubernetes pod, or on this machine (kfp.local, tests, the CLI).

A task knows it runs in a pod from ``KUBERNETES_SERVICE_HOST``: the kubelet sets it in
every container of every pod (it is how in-cluster clients, kfp's included, find the API
server), and nothing sets it on a laptop or in ``kfp.local`` (its DockerRunner
containers included). A container runtime outside Kubernetes does not set it either.

A pod's own disk is lost with the pod, so on a cluster a local ``push_destination``
would publish a model that nobody can serve. It is refused, unless the path lies under
a folder named in ``KFP_CT_DURABLE_PATHS`` (``:``-separated): set it, with
``task.set_env_variable``, beside the ``kfp.kubernetes.mount_pvc`` that mounts a
PersistentVolumeClaim there.

Standard library only.
"""

from __future__ import annotations

import os

from kfp_ct.components.common.errors import KfpCtError

POD_ENV = "KUBERNETES_SERVICE_HOST"
DURABLE_ENV = "KFP_CT_DURABLE_PATHS"


class EphemeralDestinationError(KfpCtError):
    """A local path inside a pod, where it would be lost with the pod."""


def in_pod(environ=None) -> bool:
    """True inside a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set)."""
    return bool((os.environ if environ is None else environ).get(POD_ENV))


def check_durable(path: str, what: str = "push_destination", environ=None) -> None:
    """Refuses a local ``path`` inside a pod unless it is under a declared durable mount.

    Raises:
        EphemeralDestinationError: naming the path, why, and the two ways out.
    """
    env = os.environ if environ is None else environ
    if "://" in path or not in_pod(env):
        return
    target = os.path.abspath(path)
    for root in filter(None, env.get(DURABLE_ENV, "").split(":")):
        root = os.path.abspath(root)
        if target == root or target.startswith(root.rstrip("/") + "/"):
            return
    raise EphemeralDestinationError(
        f"{what} {path!r} is a local path, and this task runs in a Kubernetes pod "
        f"(${POD_ENV} is set): whatever is written there is lost with the pod. Use a "
        f"gs:// URI (e.g. gs://my-bucket/serving/penguins), or mount a PersistentVolumeClaim "
        f"(kfp.kubernetes.mount_pvc) and name its mount path in ${DURABLE_ENV}.")
