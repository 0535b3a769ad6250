"""A check both checkpoint converters share: every variable of a layer gets a value."""

from keras_dynconv.layers import Routing


def check_every_variable_filled(layer, slots, counterpart):
    """Raises ValueError if a variable of `layer` has no slot.

    Routing's non-trainable temperature is ours alone (no checkpoint has it) and keeps
    its value. `counterpart` completes "has no ... counterpart" in the message.
    """
    filled = {id(slot.variable) for slot in slots}
    skipped = {id(layer.temperature)} if isinstance(layer, Routing) else set()
    for variable in layer.weights:
        if id(variable) not in filled | skipped:
            raise ValueError(
                f"Variable '{variable.path}' of layer '{layer.name}' has no {counterpart} "
                "counterpart."
            )
