"""The Kubernetes API from a pipeline task: the client, the namespace to act in, and
the calls on custom objects and their pods.

Shared by the components that call the API themselves (the TFJob launcher, the KServe
rollout). The ``kubernetes`` client (a dependency of kfp) is imported when used.
"""

from __future__ import annotations

import contextlib
import json
from typing import Callable, Iterator, Mapping

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


class NamespacedObjects:
    """Custom objects of one kind in one namespace, and their pods' logs, through the
    ``kubernetes`` client: what the TFJob launcher and the rollout share. A subclass sets
    the kind (GROUP, VERSION, PLURAL, KIND), the error it raises and the hints its
    errors carry; every failed call says what was being done to which object, the HTTP
    status and the API server's own message."""

    GROUP = VERSION = PLURAL = KIND = ""
    ERROR: type[KfpCtError] = KfpCtError
    HINTS: Mapping[int, str] = {}  # HTTP status -> hint appended to the error
    CREATE_404_HINT = ""  # on create, 404 means the kind is not installed
    WHO = "this task"

    def __init__(self, namespace: str, client=None, log: Callable[[str], None] = print):
        from kubernetes import client as k8s

        self.namespace = namespace
        self.api = client or api_client(who=self.WHO)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.log = log

    def where(self, name: str = "") -> str:
        return (f"{self.KIND} {self.namespace}/{name}" if name
                else f"{self.KIND}s in {self.namespace}")

    @contextlib.contextmanager
    def _errors(self, action: str, name: str) -> Iterator[None]:
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            detail = exc.reason
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(exc.body or "{}").get("message") or detail
            hint = (self.CREATE_404_HINT if exc.status == 404 and action == "create"
                    else self.HINTS.get(exc.status, ""))
            raise self.ERROR(f"cannot {action} {self.where(name)}: HTTP {exc.status} "
                             f"{detail}{hint}") from None

    def get(self, name: str) -> dict | None:
        """The object, or None when there is none of that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                self.GROUP, self.VERSION, self.namespace, self.PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            with self._errors("read", name):
                raise

    def create(self, body: Mapping) -> dict:
        with self._errors("create", body["metadata"]["name"]):
            return self.custom.create_namespaced_custom_object(
                self.GROUP, self.VERSION, self.namespace, self.PLURAL, dict(body))

    def delete(self, name: str, body=None) -> bool:
        """Deletes the object; False when it was gone."""
        from kubernetes.client.exceptions import ApiException

        kwargs = {} if body is None else {"body": body}
        try:
            self.custom.delete_namespaced_custom_object(
                self.GROUP, self.VERSION, self.namespace, self.PLURAL, name, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return False
            with self._errors("delete", name):
                raise
        return True

    def pods_by(self, name: str, selector: str) -> list[dict]:
        """The pods of object ``name`` that ``selector`` (a label selector) picks."""
        with self._errors("list the pods of", name):
            resp = self.core.list_namespaced_pod(self.namespace, label_selector=selector,
                                                 _preload_content=False)
        return json.loads(resp.data or b"{}").get("items") or []

    def container_log(self, pod: str, container: str, lines: int,
                      previous: bool = False) -> str:
        """The last ``lines`` of a container's log (of its previous run with
        ``previous``); an unreadable log is said in its place, never raised."""
        from kubernetes.client.exceptions import ApiException

        kwargs = {"container": container, "tail_lines": lines}
        if previous:
            kwargs["previous"] = True
        try:
            resp = self.core.read_namespaced_pod_log(pod, self.namespace,
                                                     _preload_content=False, **kwargs)
        except ApiException as exc:
            return f"(no log: HTTP {exc.status} {exc.reason})"
        return resp.data.decode("utf-8", errors="replace").rstrip("\n")
