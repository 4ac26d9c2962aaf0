"""``kfp-ct local-server``: a local KFP v2beta1 REST endpoint that really runs pipelines.

It serves, on 127.0.0.1, the part of the KFP v2beta1 API that ``kfp.Client`` 2.13 uses
(pipelines and uploads, versions, experiments, runs, recurring runs, healthz). Runs are
executed through ``kfp.local`` one at a time, each in a worker subprocess; recurring runs
fire on their schedules; the state (SQLite) survives a restart. Every run is recorded in
an ML Metadata store, and the official Kubeflow Pipelines UI runs beside it (the v1beta1
paths it calls, ML Metadata over gRPC-web, artifact files, task logs, a login cookie:
``ui.py``). It is a development endpoint and the test double of the cluster path::

    from kfp_ct.pipelines.entrypoints.local_server import LocalServer

    with LocalServer("/tmp/kfp-state", token="secret") as server:
        client = kfp.Client(host=server.url, existing_token="secret")

The command line calls :func:`serve`.
"""

from kfp_ct.pipelines.entrypoints.local_server.server import (LocalServer, LocalServerError,
                                                       RecordedRequest, serve)

main = serve  # the serve_forever-style entry: main(state_dir, port, token)

__all__ = ["LocalServer", "LocalServerError", "RecordedRequest", "main", "serve"]
