"""A Kubernetes API double for InferenceServices, with a small KServe controller inside.

No cluster runs here. This double answers, on 127.0.0.1, the endpoints the rollout calls
(``serving.kserve.io/v1beta1`` custom objects, pods, pod logs) the way the API server
does (merge patches, ``metadata.generation`` bumped on a spec change, ``Status`` bodies
for errors), and moves each InferenceService's status the way KServe's controller in
Serverless mode does: a change of the predictor's template (its spec but for
``canaryTrafficPercent``) creates a revision ``<name>-predictor-0000N``; the
revision becomes ready after ``ready_after`` reads (or never, or fails to load, as a
test says); ``canaryTrafficPercent`` splits the traffic between the new revision (tag
``latest``) and the last one that was rolled out (tag ``prev``); without it the new
revision takes everything once ready. Every request is recorded.

Each revision's URL is given by ``url_for(storage_uri)``, so a test points a canary at a
model server double that serves that version.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import ThreadingHTTPServer

from api_double import JsonHandler

ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
PODS = "/api/v1/namespaces/{ns}/pods"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (what ``application/merge-patch+json`` does)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _template(isvc):
    """What Knative makes a revision of: the predictor's spec but for the traffic split
    (a change of canaryTrafficPercent alone moves traffic, it makes no revision)."""
    predictor = dict(isvc["spec"]["predictor"])
    predictor.pop("canaryTrafficPercent", None)
    return json.dumps(predictor, sort_keys=True)


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class KServeDouble:
    def __init__(self, namespace="team-a", ready_after=2, url_for=None,
                 service_account="system:serviceaccount:team-a:default-editor"):
        self.ns = namespace
        self.ready_after = ready_after
        self.url_for = url_for or (lambda uri: "")
        self.service_account = service_account
        self.requests = []          # (method, path, query, body, content type)
        self.objects = {}           # name -> InferenceService
        self.revisions = {}         # name -> [{"name", "uri", "reads", "fate"}]
        self.rolled_out = {}        # name -> revision name serving all traffic
        self.fate = "ready"         # next revision: "ready" | "never" | "load-fails"
        self.forbidden = set()      # verbs answered 403: get, create, patch, delete, list
        self.on_read = None         # called (in the server's thread) on each read of one
        self.pods = []
        self.logs = {}              # (pod, container) -> text
        self.lock = threading.Lock()
        double = self

        class Handler(JsonHandler):
            def _record(self):
                path, query, body = self._read()
                double.requests.append((self.command, path, query, body,
                                        self.headers.get("Content-Type", "")))
                return path, query, body

            def _deny(self, verb, resource, name=""):
                if verb not in double.forbidden:
                    return False
                what = f'{resource} "{name}"' if name else resource
                self._send(403, _status(
                    403, "Forbidden",
                    f'{what} is forbidden: User "{double.service_account}" cannot {verb} '
                    f'resource "{resource.split(".")[0]}" in API group '
                    f'"{"serving.kserve.io" if "." in resource else ""}" in the namespace '
                    f'"{double.ns}"'))
                return True

            def do_GET(self):
                path, query, _ = self._record()
                base = ISVCS.format(ns=double.ns)
                pods = PODS.format(ns=double.ns)
                with double.lock:
                    if path.startswith(base + "/"):
                        name = path[len(base) + 1:]
                        if self._deny("get", "inferenceservices.serving.kserve.io", name):
                            return
                        obj = double.objects.get(name)
                        if obj is None:
                            return self._send(404, _status(
                                404, "NotFound",
                                f'inferenceservices.serving.kserve.io "{name}" not found'))
                        double._reconcile(name)
                        if double.on_read is not None:
                            double.on_read()
                        return self._send(200, double.objects[name])
                    if path == pods:
                        if self._deny("list", "pods"):
                            return
                        selector = query.get("labelSelector", "")
                        key, _, value = selector.partition("=")
                        items = [p for p in double.pods
                                 if p["metadata"].get("labels", {}).get(key) == value]
                        return self._send(200, {"kind": "PodList", "apiVersion": "v1",
                                                "items": items})
                    if path.startswith(pods + "/") and path.endswith("/log"):
                        pod = path.split("/")[-2]
                        text = double.logs.get((pod, query.get("container", "")), "")
                        return self._send(200, text.encode(), "text/plain")
                self._send(404, _status(404, "NotFound", "the server could not find it"))

            def do_POST(self):
                path, _, body = self._record()
                if path != ISVCS.format(ns=double.ns):
                    return self._send(404, _status(404, "NotFound", "no such collection"))
                name = body["metadata"]["name"]
                if self._deny("create", "inferenceservices.serving.kserve.io"):
                    return
                with double.lock:
                    if name in double.objects:
                        return self._send(409, _status(409, "AlreadyExists", f'"{name}" exists'))
                    obj = copy.deepcopy(body)
                    obj["metadata"].update(generation=1, uid=f"uid-{name}",
                                           resourceVersion="1")
                    obj["status"] = {}
                    double.objects[name] = obj
                    double.revisions[name] = []
                    double._new_revision(name)
                    self._send(201, obj)

            def do_PATCH(self):
                path, _, body = self._record()
                base = ISVCS.format(ns=double.ns)
                name = path[len(base) + 1:]
                if self._deny("patch", "inferenceservices.serving.kserve.io", name):
                    return
                ctype = self.headers.get("Content-Type", "")
                if ctype != "application/merge-patch+json":
                    return self._send(415, _status(415, "UnsupportedMediaType", ctype))
                with double.lock:
                    obj = double.objects.get(name)
                    if obj is None:
                        return self._send(404, _status(404, "NotFound", f'"{name}" not found'))
                    before = json.dumps(obj.get("spec"), sort_keys=True)
                    template_before = _template(obj)
                    status = obj.pop("status", {})
                    patched = merge_patch(obj, body)
                    patched["status"] = status
                    meta = patched["metadata"]
                    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
                    if json.dumps(patched.get("spec"), sort_keys=True) != before:
                        meta["generation"] += 1
                    double.objects[name] = patched
                    if _template(patched) != template_before:
                        double._new_revision(name)
                    self._send(200, patched)

            def do_DELETE(self):
                path, _, _ = self._record()
                base = ISVCS.format(ns=double.ns)
                name = path[len(base) + 1:]
                if self._deny("delete", "inferenceservices.serving.kserve.io", name):
                    return
                with double.lock:
                    if double.objects.pop(name, None) is None:
                        return self._send(404, _status(404, "NotFound", f'"{name}" not found'))
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ----------------------------------------------------------- the controller

    def _new_revision(self, name):
        revs = self.revisions[name]
        uri = self.objects[name]["spec"]["predictor"]["model"]["storageUri"]
        revs.append({"name": f"{name}-predictor-{len(revs) + 1:05d}", "uri": uri, "reads": 0,
                     "fate": self.fate})

    def _reconcile(self, name):
        obj = self.objects[name]
        revs = self.revisions[name]
        latest = revs[-1]
        latest["reads"] += 1
        ready = latest["fate"] == "ready" and latest["reads"] > self.ready_after
        pred = obj["spec"]["predictor"]
        canary = pred.get("canaryTrafficPercent")
        prev = self.rolled_out.get(name)
        status = {"observedGeneration": obj["metadata"]["generation"],
                  "url": f"http://{name}.{self.ns}.example.com",
                  "components": {"predictor": {"latestCreatedRevision": latest["name"]}},
                  "conditions": []}
        comp = status["components"]["predictor"]
        ready_revs = [r for r in revs if r["fate"] == "ready" and
                      (r is not latest or ready)]
        if ready_revs:
            comp["latestReadyRevision"] = ready_revs[-1]["name"]
        if ready:
            if canary is None or prev is None:
                self.rolled_out[name] = latest["name"]
                comp["traffic"] = [self._entry(latest, 100, True, "latest")]
            else:
                old = next(r for r in revs if r["name"] == prev)
                comp["traffic"] = [self._entry(latest, canary, True, "latest"),
                                   self._entry(old, 100 - canary, False, "prev")]
            comp["url"] = f"http://{name}-predictor.{self.ns}.example.com"
            comp["latestRolledoutRevision"] = self.rolled_out[name]
            status["conditions"] = [{"type": t, "status": "True"}
                                    for t in ("IngressReady", "PredictorReady", "Ready")]
        else:
            if prev is not None:
                old = next(r for r in revs if r["name"] == prev)
                comp["traffic"] = [self._entry(old, 100, False, "prev")]
                comp["latestRolledoutRevision"] = prev
            if latest["fate"] == "load-fails":
                status["modelStatus"] = {
                    "transitionStatus": "BlockedByFailedLoad",
                    "lastFailureInfo": {"reason": "ModelLoadFailed",
                                        "message": "Failed to load the model: No versions "
                                                   "of servable found under base path "
                                                   "/mnt/models"}}
            status["conditions"] = [
                {"type": "PredictorReady", "status": "False", "reason": "RevisionMissing",
                 "message": f"Revision \"{latest['name']}\" is not ready"},
                {"type": "Ready", "status": "False", "reason": "RevisionMissing",
                 "message": "Configuration \"predictor\" does not have any ready Revision."}]
        obj["status"] = status

    def _entry(self, rev, percent, latest, tag):
        return {"revisionName": rev["name"], "percent": percent, "latestRevision": latest,
                "tag": tag, "url": self.url_for(rev["uri"])}

    # ----------------------------------------------------------------- helpers

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def calls(self):
        """(method, path, body) of every request except the status reads."""
        return [(m, p, b) for m, p, _, b, _ in self.requests if m != "GET" or "/pods" in p]
