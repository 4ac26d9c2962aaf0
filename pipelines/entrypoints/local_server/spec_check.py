"""The graph of a compiled pipeline, checked before the endpoint stores or runs it.

The real KFP backend (2.5.0) finds these faults at different moments: the API server's
compiler (``backend/src/v2/compiler/visitor.go``, ``argocompiler/dag.go``) when a run is
created, Argo when it validates the workflow (unknown dependencies, cycles), the driver
(``backend/src/v2/driver/driver.go``) when a task starts. The endpoint refuses them all at
upload (and for inline specs), naming the task and what it misses, so a broken spec never
becomes a run that fails later with a bare ``KeyError``.

Works on the parsed ``PipelineSpec`` message; no kfp import at module level.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

ROOT = "root"  # the backend's RootComponentName
# Task inputs that a component does not declare but the kfp compiler adds for the task's
# own use, and the backend's driver passes by ("TODO(Bobgy): verify whether there are
# inputs not in the inputs spec"): a pipeline channel that a placeholder, a condition or
# a resource field reads (kfp's additional_input_name_for_pipeline_channel), and the
# resource fields that kfp 2.7 / 2.8 wrote as constant task inputs.
CHANNEL_INPUT_PREFIX = "pipelinechannel--"
RESOURCE_INPUTS = frozenset({"cpu_limit", "cpu_request", "memory_limit", "memory_request",
                             "accelerator_type", "accelerator_count"})


class SpecProblem(Exception):
    """One fault in the graph; its text names the DAG, the task and what is missing."""


def first_problem(spec: Any) -> Optional[str]:
    """The first fault in a parsed PipelineSpec's graph, or None when it has none.

    Args:
        spec: A ``pipeline_spec_pb2.PipelineSpec`` (parsed, with a root).

    Returns:
        A sentence naming the DAG, the task and the missing component / executor /
        input / task, or the cycle; None when every check passes.
    """
    from google.protobuf import json_format

    executors = json_format.MessageToDict(spec.deployment_spec).get("executors") or {}
    try:
        _check_component(ROOT, spec.root, spec, set(executors), set(), None)
    except SpecProblem as problem:
        return str(problem)
    return None


def _check_component(name: str, component: Any, spec: Any, executors: set, visited: set,
                     used_by: Optional[str]) -> None:
    if name in visited:  # each component once, as the backend's dfs
        return
    visited.add(name)
    of = f" (used by {used_by})" if used_by else ""
    kind = component.WhichOneof("implementation")
    if kind == "executor_label":
        if component.executor_label not in executors:
            raise SpecProblem(f"component '{name}'{of} names executor "
                              f"'{component.executor_label}', which is not in "
                              "deploymentSpec.executors")
        return
    if kind != "dag":
        raise SpecProblem(f"component '{name}'{of} has neither an executorLabel nor a dag")
    tasks = component.dag.tasks
    for task_name in sorted(tasks):
        task = tasks[task_name]
        where = f"task '{task_name}' of DAG '{name}'"
        ref = task.component_ref.name
        if not ref:
            raise SpecProblem(f"{where} has no componentRef.name")
        if ref not in spec.components:
            raise SpecProblem(f"{where} names component '{ref}', which is not in components")
        child = spec.components[ref]
        _check_inputs(where, task, ref, child, component)
        _check_producers(where, task, tasks, spec)
        _check_component(ref, child, spec, executors, visited, where)
    _check_outputs(name, component, tasks)
    _check_acyclic(name, tasks)


def _check_inputs(where: str, task: Any, ref: str, child: Any, parent: Any) -> None:
    """Bound inputs are declared, required ones are bound, DAG inputs read exist."""
    declared = child.input_definitions
    iterated = {task.parameter_iterator.item_input, task.artifact_iterator.item_input} - {""}
    for kind, bound, declared_kind, parent_kind in (
            ("parameter", task.inputs.parameters, declared.parameters,
             parent.input_definitions.parameters),
            ("artifact", task.inputs.artifacts, declared.artifacts,
             parent.input_definitions.artifacts)):
        for input_name in sorted(bound):
            if input_name not in declared_kind and not _compiler_added(kind, input_name,
                                                                        bound[input_name]):
                raise SpecProblem(f"{where} binds input {kind} '{input_name}', which its "
                                  f"component '{ref}' does not declare in inputDefinitions")
            read = getattr(bound[input_name], f"component_input_{kind}", "")
            if read and read not in parent_kind:
                raise SpecProblem(f"{where} reads input {kind} '{read}' of its DAG "
                                  f"(componentInput{kind.capitalize()}), which the DAG does "
                                  "not declare in inputDefinitions")
        for input_name in sorted(declared_kind):
            item = declared_kind[input_name]
            if input_name in bound or input_name in iterated or item.is_optional:
                continue
            if kind == "parameter" and item.HasField("default_value"):
                continue
            raise SpecProblem(f"{where} does not bind the required input {kind} "
                              f"'{input_name}' of its component '{ref}' (it has no default)")


def _compiler_added(kind: str, name: str, value: Any) -> bool:
    if kind != "parameter":
        return False
    return name.startswith(CHANNEL_INPUT_PREFIX) or (
        name in RESOURCE_INPUTS and value.WhichOneof("kind") == "runtime_value")


def _producers(task: Any) -> Iterator[tuple]:
    """(producer task, how it is named, output kind, output key) for each dependency."""
    for dep in task.dependent_tasks:
        yield dep, "dependentTasks", None, None
    for input_name, value in sorted(task.inputs.parameters.items()):
        kind = value.WhichOneof("kind")
        if kind == "task_output_parameter":
            out = value.task_output_parameter
            yield (out.producer_task, f"input parameter '{input_name}' "
                   "(taskOutputParameter.producerTask)", "parameter", out.output_parameter_key)
        elif kind == "task_final_status":
            yield (value.task_final_status.producer_task, f"input parameter '{input_name}' "
                   "(taskFinalStatus.producerTask)", None, None)
    for input_name, value in sorted(task.inputs.artifacts.items()):
        if value.WhichOneof("kind") == "task_output_artifact":
            out = value.task_output_artifact
            yield (out.producer_task, f"input artifact '{input_name}' "
                   "(taskOutputArtifact.producerTask)", "artifact", out.output_artifact_key)


def _check_producers(where: str, task: Any, tasks: Any, spec: Any) -> None:
    for producer, how, kind, key in _producers(task):
        if producer not in tasks:
            raise SpecProblem(f"{where} depends on task '{producer}' through {how}, which is "
                              "not a task of the same DAG")
        ref = tasks[producer].component_ref.name
        if kind and ref in spec.components:
            outputs = getattr(spec.components[ref].output_definitions, f"{kind}s")
            if key not in outputs:
                raise SpecProblem(f"{where} reads output {kind} '{key}' of task '{producer}' "
                                  f"through {how}, which component '{ref}' does not declare "
                                  "in outputDefinitions")


def _check_outputs(name: str, component: Any, tasks: Any) -> None:
    """A DAG's outputs are taken from tasks of that DAG."""
    outputs = component.dag.outputs
    subtasks = []
    for output, spec in sorted(outputs.parameters.items()):
        subtasks.append((output, spec.value_from_parameter.producer_subtask))
        subtasks += [(output, s.producer_subtask)
                     for s in spec.value_from_oneof.parameter_selectors]
    for output, spec in sorted(outputs.artifacts.items()):
        subtasks += [(output, s.producer_subtask) for s in spec.artifact_selectors]
    for output, subtask in subtasks:
        if subtask and subtask not in tasks:
            raise SpecProblem(f"output '{output}' of DAG '{name}' is taken from task "
                              f"'{subtask}', which is not a task of that DAG")


def _check_acyclic(name: str, tasks: Any) -> None:
    """Depth-first over each task's producers; a task met again on the path is a cycle."""
    after = {t: sorted({p for p, *_ in _producers(tasks[t])}) for t in tasks}
    done: set = set()
    for start in sorted(after):
        if start in done:
            continue
        path = [start]
        stack = [iter(after[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done.add(path.pop())
                stack.pop()
            elif nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                raise SpecProblem(f"the tasks of DAG '{name}' form a cycle: "
                                  f"{' -> '.join(cycle)} (each waits for the next)")
            elif nxt not in done:
                path.append(nxt)
                stack.append(iter(after[nxt]))
