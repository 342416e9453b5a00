"""The forecaster network: a PatchTST-style encoder-only Transformer.

`build_backbone(...)` returns a functional Keras model:

    history (B, L, C) --InstanceNormalization--> (B, L, C), loc, scale
        --PatchEmbedding (with end_time, time_known)--> (B*C, N, D)
        --TransformerEncoderBlock x num_layers (attention: full/local/linear)
        --LayerNormalization--> ForecastHead --> point (B, H, C),
                                                 quantiles (B, H, C, 3)

Every channel is forecast independently from its own history with shared
weights (channel independence), so the model takes any number of channels.
`attention_model(model)` builds a second functional model, with the same
weights, that returns the attention weights of every encoder block.
"""

import keras

from keras_attention.layers import (
    LinearAttention,
    LocalAttention,
    MultiHeadAttention,
    TransformerEncoderBlock,
)
from keras_attention.utils.validation import check_choice, check_positive_int
from zoo.forecaster.forecast_head import ForecastHead
from zoo.forecaster.instance_normalization import InstanceNormalization
from zoo.forecaster.patch_embedding import PatchEmbedding, time_dtype

ATTENTIONS = ("full", "local", "linear")

#: The arguments of `build_backbone`, read from a recipe config by `model_kwargs`.
MODEL_ARGUMENTS = (
    "lookback", "patch_len", "stride", "hidden_dim", "num_heads", "num_layers",
    "intermediate_dim", "dropout", "head_dropout", "attention", "window_size",
    "time2vec_dim", "quantile_rank", "instance_scale",
)


def model_kwargs(config, horizon, step_seconds):
    """The `build_backbone` arguments held in a config dict (or dataclass)."""
    if not isinstance(config, dict):
        config = config.to_dict()
    kwargs = {key: config[key] for key in MODEL_ARGUMENTS}
    kwargs.update(horizon=int(horizon), step_seconds=int(step_seconds))
    return kwargs


def make_attention(attention, num_heads, key_dim, window_size, dropout, name):
    """One attention layer of the kind `attention` ("full", "local" or "linear")."""
    if attention == "full":
        return MultiHeadAttention(num_heads, key_dim, dropout=dropout, name=name)
    if attention == "local":
        return LocalAttention(num_heads, key_dim, window_size=window_size, dropout=dropout,
                              name=name)
    return LinearAttention(num_heads, key_dim, feature_map="elu", name=name)


def build_backbone(
    lookback,
    horizon,
    patch_len=16,
    stride=8,
    hidden_dim=64,
    num_heads=4,
    num_layers=3,
    intermediate_dim=128,
    dropout=0.1,
    head_dropout=0.0,
    attention="full",
    window_size=4,
    time2vec_dim=8,
    quantile_rank=32,
    instance_scale=True,
    step_seconds=3600,
):
    """Builds the forecaster network.

    Args:
        lookback: look-back length L (steps of history the model reads).
        horizon: forecast length H.
        patch_len, stride: patch size and step between patches.
        hidden_dim: token size D (divisible by `num_heads`).
        num_heads, num_layers, intermediate_dim: the encoder blocks.
        dropout: dropout of the tokens, attention and feed-forward layers.
        head_dropout: dropout before the forecast head.
        attention: `"full"` (softmax attention over all patches), `"local"`
            (each patch attends the patches within `window_size`) or
            `"linear"` (elu + 1 kernel attention, linear in the number of
            patches; it forms no attention weights).
        window_size: the patch window of `"local"` attention.
        time2vec_dim: size of the Time2Vec position embedding.
        quantile_rank: hidden size of the quantile head.
        step_seconds: seconds between two steps of the series.

    Returns:
        A functional `keras.Model` with inputs `{"history": (B, L, C) float32,
        "end_time": (B,) int64 Unix seconds of the last history step,
        "time_known": (B,) float32, 1 when end_time is real and 0 otherwise}`
        and outputs `{"point": (B, H, C), "quantiles": (B, H, C, 3)}` on the
        history's scale.
    """
    check_choice("attention", attention, ATTENTIONS)
    check_positive_int("num_layers", num_layers)
    check_positive_int("num_heads", num_heads)
    check_positive_int("hidden_dim", hidden_dim)
    if hidden_dim % num_heads:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads`. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    history = keras.Input((lookback, None), name="history")
    end_time = keras.Input((), dtype=time_dtype(), name="end_time")
    time_known = keras.Input((), name="time_known")
    normalised, loc, scale = InstanceNormalization(
        scale=instance_scale, name="instance_norm"
    )(history)
    tokens = PatchEmbedding(
        lookback, patch_len, stride, hidden_dim, time2vec_dim=time2vec_dim,
        step_seconds=step_seconds, dropout=dropout, name="patch_embedding",
    )([normalised, end_time, time_known])
    for i in range(num_layers):
        tokens = TransformerEncoderBlock(
            num_heads, intermediate_dim, dropout=dropout,
            attention=make_attention(
                attention, num_heads, hidden_dim // num_heads, window_size, dropout,
                name=f"attention_{i}",
            ),
            name=f"encoder_{i}",
        )(tokens)
    tokens = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(tokens)
    point, quantiles = ForecastHead(
        horizon, quantile_rank=quantile_rank, dropout=head_dropout, name="head"
    )([tokens, loc, scale])
    outputs = {
        "point": keras.layers.Identity(name="point")(point),
        "quantiles": keras.layers.Identity(name="quantiles")(quantiles),
    }
    return keras.Model(
        {"history": history, "end_time": end_time, "time_known": time_known},
        outputs,
        name="patch_transformer_forecaster",
    )


def encoder_blocks(model):
    """The encoder blocks of a `build_backbone` model, first first."""
    return [layer for layer in model.layers if isinstance(layer, TransformerEncoderBlock)]


def attention_model(model):
    """A model returning every encoder block's attention weights.

    It is built from copies of `model`'s layers holding the same weights (a
    Keras layer first called for one output cannot join a functional graph
    that asks it for two), so build it again after `model`'s weights change.

    Returns:
        A functional model with the inputs of `model` and the output
        `(B * C, num_layers, heads, N, N)`: for each channel series, each
        block and head, how much each patch (row) attends each patch (column).

    Raises:
        ValueError: the model uses linear attention, which forms no weights.
    """
    blocks = encoder_blocks(model)
    if any(isinstance(block.attention, LinearAttention) for block in blocks):
        raise ValueError(
            "Linear attention forms no attention weights, so there are no maps to show; "
            "train with attention='full' or 'local' for attention maps. "
            "Received: attention='linear'"
        )
    def copy(layer):
        return type(layer).from_config(layer.get_config())

    inputs = {
        "history": keras.Input(model.input["history"].shape[1:], name="history"),
        "end_time": keras.Input((), dtype=time_dtype(), name="end_time"),
        "time_known": keras.Input((), name="time_known"),
    }
    norm = copy(model.get_layer("instance_norm"))
    embedding = copy(model.get_layer("patch_embedding"))
    copies = [copy(block) for block in blocks]
    normalised, _, _ = norm(inputs["history"])
    tokens = embedding([normalised, inputs["end_time"], inputs["time_known"]])
    maps = []
    for block in copies:
        tokens, scores = block(tokens, return_attention_scores=True)  # (B*C, heads, N, N)
        maps.append(keras.ops.expand_dims(scores, 1))
    stacked = maps[0] if len(maps) == 1 else keras.layers.Concatenate(axis=1)(maps)
    embedding.set_weights(model.get_layer("patch_embedding").get_weights())
    for source, target in zip(blocks, copies):
        target.set_weights(source.get_weights())
    return keras.Model(inputs, stacked, name="forecaster_attention_maps")
