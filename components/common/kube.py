"""The Kubernetes API from a pipeline task: the client and the namespace to act in.

Shared by the components that call the API themselves (the TFJob launcher, the KServe
rollout). The ``kubernetes`` client (a dependency of kfp) is imported when used.
"""

from __future__ import annotations

from kfp_ct.components.common.errors import KfpCtError

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def namespace_of(given: str = "", path: str = SA_NAMESPACE_FILE, what: str = "the TFJob") -> str:
    """The namespace to act in: ``given``, else the pod's own (its service account's)."""
    if given:
        return given
    try:
        with open(path, encoding="utf-8") as fh:
            found = fh.read().strip()
    except OSError:
        found = ""
    if not found:
        raise KfpCtError(f"no namespace for {what}: none given and {path} is not there "
                         "(not in a pod?); pass the namespace parameter")
    return found


def api_client(host: str = "", who: str = "the TFJob launcher"):
    """A Kubernetes ApiClient: ``host`` (tests, a proxy) without auth, else in-cluster."""
    from kubernetes import client, config

    if host:
        configuration = client.Configuration()
        configuration.host = host
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException as exc:
        raise KfpCtError(f"cannot reach the Kubernetes API from here: {exc} ({who} "
                         "runs in a pod of the cluster)") from None
    return client.ApiClient()
