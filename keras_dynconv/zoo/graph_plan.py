"""A functional model's graph walked from a plan made once per model.

Keras' `Functional._run_through_graph` works out on every call what is fixed for a
model: the order of its nodes, which of them can run, and each node's arguments and
outputs through `keras.tree` functions (torch's pytree on that backend): EfficientNet-B0
at batch 1 took 55.3 ms that way and 50.8 ms from the plan on this project's 2-core
CPU. `run` walks the same nodes in the same order with the same calls, from a plan of
node arguments and output positions made at the first call. `ZooModel` uses it for its
direct calls (`python scripts/bench_graph_plan.py`; equal to `_run_through_graph`:
tests/test_direct_calls.py).
"""

import weakref

import keras

try:  # where Keras keeps a traced tensor's class; not exported
    from keras.src.backend.common.keras_tensor import KerasTensor

    KERAS_INTERNALS_FOUND = True
except ImportError:
    KERAS_INTERNALS_FOUND = False

# model -> its plan: [(node, operation, ids of the node's inputs, arguments, ids of its
# outputs)], arguments None where they are nested (then `node.arguments.fill_in`).
_PLANS = weakref.WeakKeyDictionary()


def run(model, inputs, operation_fn):
    """`model._run_through_graph(inputs, operation_fn=operation_fn)`: `model`'s outputs
    for its standardised `inputs`, each node's operation called as
    `operation_fn(operation)(*args, **kwargs)`."""
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = _plan(model)
    tensors = {id(x): y for x, y in zip(model.inputs, keras.tree.flatten(inputs))}
    for node, operation, input_ids, arguments, output_ids in plan:
        if any(input_id not in tensors for input_id in input_ids):
            continue  # not computable from these inputs: skipped, as Keras does
        if arguments is None:
            args, kwargs = node.arguments.fill_in(tensors)
        else:
            positional, keywords = arguments
            args = [tensors[value] if is_tensor else value for is_tensor, value in positional]
            kwargs = {
                key: tensors[value] if is_tensor else value
                for key, (is_tensor, value) in keywords.items()
            }
        outputs = operation_fn(operation)(*args, **kwargs)
        if len(output_ids) == 1 and not isinstance(outputs, (list, tuple, dict)):
            tensors[output_ids[0]] = outputs
        else:
            for output_id, value in zip(output_ids, keras.tree.flatten(outputs)):
                tensors[output_id] = value
    return keras.tree.pack_sequence_as(
        model._outputs_struct, [tensors[id(x)] for x in model.outputs]
    )


def _plan(model):
    plan = []
    nodes_by_depth = model._nodes_by_depth
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            plan.append((
                node, node.operation, [id(x) for x in node.input_tensors],
                _flat_arguments(node.arguments.args, node.arguments.kwargs),
                [id(x) for x in node.outputs],
            ))
    return plan


def _flat_arguments(args, kwargs):
    """`(positional, keywords)` of `(is_tensor, id or value)` pairs, or None where an
    argument is nested."""
    values = list(args) + list(kwargs.values())
    if any(isinstance(value, (list, tuple, dict)) for value in values):
        return None

    def entry(value):
        return (True, id(value)) if isinstance(value, KerasTensor) else (False, value)

    return [entry(value) for value in args], {key: entry(value) for key, value in kwargs.items()}
