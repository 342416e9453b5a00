"""Finding the attention layers of a model, and setting the analysis hooks on them."""

import contextlib

import keras

from keras_attention.layers.attention.base_attention import BaseAttention


def _sublayers(value, depth=0):
    """The layers held by one attribute value (a layer, or lists/dicts of layers)."""
    if isinstance(value, keras.layers.Layer):
        yield value
    elif depth < 2 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _sublayers(item, depth + 1)
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            yield from _sublayers(item, depth + 1)


def attention_layers(model):
    """`[(path, layer)]`: the innermost attention layers of `model`, searched recursively.

    A path joins the layer names from below `model` down to the layer with "/", e.g.
    `"encoder_block/self_attention"`. Attention layers built from other attention
    layers (e.g. `CrossModalAttention`) are represented by those inner layers. A
    layer reachable along several paths is listed once, under the first path found.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a Keras model or layer. Received: model={model!r}")
    seen = set()
    found = []

    def visit(layer, path):
        """Walk `layer`; returns True when its subtree holds an attention layer."""
        seen.add(id(layer))
        has_attention = False
        for value in list(vars(layer).values()):
            for child in _sublayers(value):
                if id(child) in seen:
                    continue
                child_path = f"{path}/{child.name}" if path else child.name
                has_attention |= visit(child, child_path)
        if isinstance(layer, BaseAttention):
            if not has_attention:
                found.append((path or layer.name, layer))
            return True
        return has_attention

    visit(model, "")
    return found


def select_layers(model, layer_names, argument="layer_names"):
    """The `(path, layer)` pairs named by `layer_names` (paths or unique layer names);
    all attention layers of `model` when `layer_names` is None."""
    layers = attention_layers(model)
    if layer_names is None:
        return layers
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    selected = []
    for name in layer_names:
        matches = [(p, layer) for p, layer in layers if p == name]
        if not matches:
            matches = [(p, layer) for p, layer in layers if layer.name == name]
        if len(matches) != 1:
            problem = "matches no attention layer" if not matches else "is ambiguous"
            raise ValueError(
                f"`{argument}` entry {name!r} {problem} of the model; use one of the paths "
                f"{[p for p, _ in layers]}. Received: {argument}={list(layer_names)!r}"
            )
        if all(matches[0][1] is not layer for _, layer in selected):
            selected.append(matches[0])
    return selected


@contextlib.contextmanager
def layer_hook(layers, attribute, values):
    """Set `attribute` on each layer to its value for the duration of the block, then
    restore what was there (the class default when nothing was)."""
    previous = []
    try:
        for layer, value in zip(layers, values):
            previous.append((layer, layer.__dict__.get(attribute, _MISSING)))
            setattr(layer, attribute, value)
        yield
    finally:
        for layer, old in reversed(previous):
            if old is _MISSING:
                delattr(layer, attribute)
            else:
                setattr(layer, attribute, old)


_MISSING = object()
