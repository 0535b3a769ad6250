"""A functional model's graph walked from a plan made once per model.

Keras' `Functional._run_through_graph` works out on every call what is fixed for a
model: the order of its nodes, which of them can run, and each node's arguments and
outputs through `keras.tree` functions (torch's pytree on that backend): EfficientNet-B0
at batch 1 took 55.3 ms that way and 50.8 ms from the plan on this project's 2-core
CPU. `run` walks the same nodes in the same order with the same calls, from a plan of
node arguments and output positions made at the first call. `ZooModel` uses it for its
direct calls (`python scripts/bench_graph_plan.py`; equal to `_run_through_graph`:
tests/test_direct_calls.py).

The plan also pairs each convolution whose only consumer is a batch normalisation that
can be folded into it (`keras_dynconv.layers.folded_normalization`), with the activation
layer after the normalisation where it is that output's only reader and can run in
place; given `fold`, `run` offers each pair to it and skips the layers it computed.
"""

import weakref

import keras

from keras_dynconv.layers import folded_normalization

try:  # where Keras keeps a traced tensor's class; not exported
    from keras.src.backend.common.keras_tensor import KerasTensor

    KERAS_INTERNALS_FOUND = True
except ImportError:
    KERAS_INTERNALS_FOUND = False

# model -> (its plan: [(node, operation, ids of the node's inputs, arguments, ids of
# its outputs)], arguments None where they are nested (then `node.arguments.fill_in`);
# its folds: {index of a convolution's entry: (NormalizedConvolution, indices of the
# entries it also computes, the last of which gives its output)}).
_PLANS = weakref.WeakKeyDictionary()


def run(model, inputs, operation_fn, fold=None):
    """`model._run_through_graph(inputs, operation_fn=operation_fn)`: `model`'s outputs
    for its standardised `inputs`, each node's operation called as
    `operation_fn(operation)(*args, **kwargs)`. With `fold`, each convolution that has a
    foldable normalisation after it is first offered as `fold(pair, args, kwargs)`
    (`pair` a `folded_normalization.NormalizedConvolution`), which returns the
    normalisation's output, or None to have both run as usual."""
    planned = _PLANS.get(model)
    if planned is None:
        planned = _PLANS[model] = _plan(model)
    plan, folds = planned
    tensors = {id(x): y for x, y in zip(model.inputs, keras.tree.flatten(inputs))}
    folded = set()
    for index, (node, operation, input_ids, arguments, output_ids) in enumerate(plan):
        if index in folded or any(input_id not in tensors for input_id in input_ids):
            continue  # computed with its convolution; or, as Keras does, not computable
        if arguments is None:
            args, kwargs = node.arguments.fill_in(tensors)
        else:
            positional, keywords = arguments
            args = [tensors[value] if is_tensor else value for is_tensor, value in positional]
            kwargs = {
                key: tensors[value] if is_tensor else value
                for key, (is_tensor, value) in keywords.items()
            }
        if fold is not None and index in folds:
            pair, computed = folds[index]
            outputs = fold(pair, args, kwargs)
            if outputs is not None:
                tensors[plan[computed[-1]][4][0]] = outputs
                folded.update(computed)
                continue
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
    return plan, _folds(model, plan)


def _folds(model, plan):
    """The plan's foldable pairs: a convolution's entry whose one output is read only
    by a foldable normalisation and is not a model output; with the normalisation's
    only reader, where it is an activation that can run in place."""
    readers = {}
    for index, (_, _, input_ids, _, _) in enumerate(plan):
        for input_id in set(input_ids):
            readers.setdefault(input_id, []).append(index)
    model_outputs = {id(x) for x in model.outputs}

    def only_reader(index):
        """The index of the one entry that reads entry `index`'s one output, taking it
        as its only argument (mask=None aside); None otherwise."""
        output_ids = plan[index][4]
        if len(output_ids) != 1 or output_ids[0] in model_outputs:
            return None
        reading = readers.get(output_ids[0], [])
        if len(reading) != 1:
            return None
        _, _, input_ids, arguments, outputs = plan[reading[0]]
        simple = (
            len(input_ids) == 1
            and len(outputs) == 1
            and arguments is not None
            and len(arguments[0]) == 1
            and all(value == (False, None) for value in arguments[1].values())  # mask=None
        )
        return reading[0] if simple else None

    folds = {}
    for index, (_, operation, _, _, _) in enumerate(plan):
        normalization_index = only_reader(index)
        if normalization_index is None or not isinstance(operation, keras.layers.Layer):
            continue
        normalization = plan[normalization_index][1]
        if not folded_normalization.foldable(operation, normalization):
            continue
        computed = [normalization_index]
        activation_index = only_reader(normalization_index)
        activation = None
        if activation_index is not None and folded_normalization.inplace_activation(
            plan[activation_index][1]
        ):
            activation = plan[activation_index][1]
            computed.append(activation_index)
        pair = folded_normalization.NormalizedConvolution(operation, normalization, activation)
        folds[index] = (pair, computed)
    return folds


def _flat_arguments(args, kwargs):
    """`(positional, keywords)` of `(is_tensor, id or value)` pairs, or None where an
    argument is nested."""
    values = list(args) + list(kwargs.values())
    if any(isinstance(value, (list, tuple, dict)) for value in values):
        return None

    def entry(value):
        return (True, id(value)) if isinstance(value, KerasTensor) else (False, value)

    return [entry(value) for value in args], {key: entry(value) for key, value in kwargs.items()}
