"""KFP wrapper of the rollout."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from kfp_ct.components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def rollout(
    pushed: Input[Model],
    rollout: Output[Artifact],
    target: str = "kserve",
    name: str = "",
    namespace: str = "",
    canary_percent: int = 10,
    ready_timeout_s: int = 900,
    soak_s: int = 0,
    poll_s: int = 10,
    service_account: str = "",
    runtime: str = "",
    resources: dict = {},
    canary_url: str = "",
    tfserving_url: str = "",
    model_config_path: str = "",
):
    """Serves the pushed version as a canary, judges it, then promotes it or rolls it back.

    kserve: a KServe InferenceService (created on the first deploy; later a canary
    revision with canary_percent of the traffic). tfserving: the canary and stable version
    labels of a TF Serving model config file. The judge sends the version's warmup rows to
    the canary and compares the answers with those push recorded. When push pushed nothing,
    nothing changes and the reason is recorded.

    Args:
        pushed: push's output: the version to serve (its metadata names it).
        target: "kserve" or "tfserving".
        name: The InferenceService (kserve) or the model name (tfserving); empty: the
            model base's folder name.
        namespace: The InferenceService's namespace; empty: this pod's namespace.
        canary_percent: The canary's share of the traffic while it is judged (1..99).
        ready_timeout_s: How long the canary may take to become ready.
        soak_s: How long the canary keeps its share before it is judged again and promoted.
        poll_s: Seconds between looks at the InferenceService or the server.
        service_account: The predictor's service account (reads the model base).
        runtime: A KServe ServingRuntime name; empty: KServe picks the TF Serving runtime.
        resources: The predictor's {"requests": {...}, "limits": {...}}; empty: the runtime's.
        canary_url: The canary's address for the judge; empty: the InferenceService's own
            (the canary revision's tagged URL).
        tfserving_url: The TF Serving REST address (tfserving target).
        model_config_path: The TF Serving model config file; empty: <model base>/models.config.

    Returns:
        rollout: rollout.json and a ROLLED_OUT / NOT_ROLLED_OUT marker holding the reason;
            its metadata: "rolled_out", "state", "target", "version", "previous", "reason".
    """
    import json
    import time

    from kfp_ct.components.common.artifacts import check_inputs, stamp_outputs
    from kfp_ct.components.rollout.logic import Policy, run_rollout

    started = time.perf_counter()
    check_inputs("rollout", pushed=pushed)
    result = run_rollout(
        dict(pushed.metadata), rollout.path, target=target, name=name, namespace=namespace,
        policy=Policy(canary_percent=canary_percent, ready_timeout_s=ready_timeout_s,
                      soak_s=soak_s, poll_s=poll_s),
        service_account=service_account, runtime=runtime, resources=resources,
        canary_url=canary_url, tfserving_url=tfserving_url,
        model_config_path=model_config_path)
    rollout.metadata.update(json.loads(json.dumps(result.summary(), default=str)))
    stamp_outputs("rollout", rollout=rollout)
    print(f"[kfp-ct] timing task=rollout logic_s={time.perf_counter() - started:.2f}")
