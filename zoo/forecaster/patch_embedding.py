"""Channel-independent patch tokens of a series with calendar and Time2Vec features.

Shape legend: B batch, L look-back length, C channels, P patch length,
N number of patches, D hidden size, K Time2Vec size.
"""

import keras
import numpy as np
from keras import ops

from keras_attention.layers import Time2Vec
from keras_attention.utils.validation import check_positive_int, check_rate

SECONDS_PER_DAY = 86400.0
CALENDAR_FEATURES = 6


def patch_layout(lookback, patch_len, stride):
    """`(num_patches, starts)` of the patches of a look-back.

    The look-back is extended at its end by `stride` copies of its last value
    (as in PatchTST), then cut into patches of `patch_len` steps every
    `stride` steps. `starts[j]` is the first step of patch j.
    """
    padded = lookback + stride
    num_patches = (padded - patch_len) // stride + 1
    return num_patches, np.arange(num_patches) * stride


def time_dtype():
    """The dtype of Unix-second inputs: int64, or int32 under JAX without 64-bit
    types (JAX would truncate int64 to int32 with a warning; int32 holds Unix
    seconds until 2038)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "int32"
    return "int64"


@keras.saving.register_keras_serializable(package="keras_attention")
class PatchEmbedding(keras.layers.Layer):
    """Patch tokens of each channel of a series (Nie et al. 2023, "A Time Series
    is Worth 64 Words", PatchTST), with time features per patch.

    The channels are treated independently: a `(B, L, C)` input gives
    `B * C` token sequences (channel-major within each batch row). Each
    patch of `patch_len` steps is projected linearly to `hidden_dim`, and its
    time features are added through a second projection:

    - the fixed calendar features of the patch's last step
      (`Time2Vec.calendar_features`: time of day, day of week, day of year),
      computed from `end_time`, the Unix time of the last look-back step;
      they are multiplied by `time_known` (0 for a series without known
      times, so the model can still forecast it);
    - a learned `Time2Vec` embedding of the patch's position, in days before
      the end of the look-back (this is the positional encoding).

    Args:
        lookback: look-back length L.
        patch_len: steps per patch P.
        stride: steps between patch starts.
        hidden_dim: token size D.
        time2vec_dim: Time2Vec size K.
        step_seconds: seconds between two steps of the series.
        dropout: dropout on the tokens.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list `[series (B, L, C), end_time (B,) int, time_known (B,)]`.
        training: enables dropout.

    Returns:
        `(B * C, N, D)` tokens.

    Example:

    >>> layer = PatchEmbedding(lookback=96, patch_len=16, stride=8, hidden_dim=32)
    >>> x = keras.random.normal((2, 96, 3))
    >>> t = keras.ops.array([1.4e9, 1.5e9], "int64")
    >>> layer([x, t, keras.ops.ones((2,))]).shape
    (6, 12, 32)
    """

    def __init__(self, lookback, patch_len, stride, hidden_dim, time2vec_dim=8,
                 step_seconds=3600, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lookback = check_positive_int("lookback", lookback)
        self.patch_len = check_positive_int("patch_len", patch_len)
        self.stride = check_positive_int("stride", stride)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.time2vec_dim = check_positive_int("time2vec_dim", time2vec_dim)
        self.step_seconds = check_positive_int("step_seconds", step_seconds)
        self.dropout = check_rate("dropout", dropout)
        if self.patch_len > self.lookback:
            raise ValueError(
                "`patch_len` must not exceed `lookback`. "
                f"Received: patch_len={patch_len}, lookback={lookback}"
            )
        if self.stride > self.patch_len:
            raise ValueError(
                "`stride` must not exceed `patch_len` (no step may be skipped). "
                f"Received: stride={stride}, patch_len={patch_len}"
            )
        self.num_patches, starts = patch_layout(self.lookback, self.patch_len, self.stride)
        # Last real (unpadded) step of each patch, and its offset from the end.
        self._last_steps = np.minimum(starts + self.patch_len - 1, self.lookback - 1)
        self._steps_before_end = (self.lookback - 1 - self._last_steps).astype("int64")

    def build(self, input_shape):
        series_shape = tuple(input_shape[0])
        if len(series_shape) != 3 or series_shape[1] != self.lookback:
            raise ValueError(
                f"`series` must have shape (batch, {self.lookback}, channels). "
                f"Received: shape={series_shape}"
            )
        self.value_projection = keras.layers.Dense(
            self.hidden_dim, dtype=self.dtype_policy, name="value_projection"
        )
        self.value_projection.build((None, None, None, self.patch_len))
        self.time2vec = Time2Vec(self.time2vec_dim, dtype=self.dtype_policy, name="time2vec")
        self.time2vec.build((1, self.num_patches, 1))
        self.time_projection = keras.layers.Dense(
            self.hidden_dim, dtype=self.dtype_policy, name="time_projection"
        )
        self.time_projection.build((None, self.num_patches, CALENDAR_FEATURES + self.time2vec_dim))
        self.token_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def patch_end_times(self, end_time):
        """`(B, N)` Unix times of the last step of each patch."""
        dtype = time_dtype()
        end_time = ops.cast(ops.convert_to_tensor(end_time), dtype)
        offsets = ops.convert_to_tensor(self._steps_before_end * self.step_seconds, dtype)
        return ops.expand_dims(end_time, -1) - offsets[None, :]

    def call(self, inputs, training=None):
        series, end_time, time_known = inputs
        series = ops.cast(series, self.compute_dtype)
        channels = ops.shape(series)[2]
        x = ops.transpose(series, (0, 2, 1))  # (B, C, L)
        x = ops.concatenate([x, ops.repeat(x[..., -1:], self.stride, axis=-1)], axis=-1)
        index = (np.arange(self.num_patches)[:, None] * self.stride
                 + np.arange(self.patch_len)[None, :])  # (N, P)
        patches = ops.take(x, ops.convert_to_tensor(index.reshape(-1), "int32"), axis=2)
        patches = ops.reshape(
            patches, (-1, channels, self.num_patches, self.patch_len)
        )  # (B, C, N, P)
        tokens = self.value_projection(patches)  # (B, C, N, D)

        calendar = Time2Vec.calendar_features(self.patch_end_times(end_time))  # (B, N, 6)
        known = ops.cast(ops.reshape(time_known, (-1, 1, 1)), "float32")
        calendar = calendar * known
        days = -self._steps_before_end.astype("float32") * self.step_seconds / SECONDS_PER_DAY
        position = self.time2vec(ops.convert_to_tensor(days.reshape(1, -1, 1)))  # (1, N, K)
        position = ops.broadcast_to(
            ops.cast(position, "float32"),
            (ops.shape(calendar)[0], self.num_patches, self.time2vec_dim),
        )
        time_features = ops.concatenate([calendar, position], axis=-1)
        time_tokens = self.time_projection(ops.cast(time_features, self.compute_dtype))  # (B, N, D)
        tokens = tokens + ops.expand_dims(time_tokens, 1)  # (B, C, N, D)
        tokens = ops.reshape(tokens, (-1, self.num_patches, self.hidden_dim))  # (B*C, N, D)
        return self.token_dropout(tokens, training=training)

    def compute_output_shape(self, input_shape):
        series_shape = input_shape[0]
        batch = None
        if series_shape[0] is not None and series_shape[2] is not None:
            batch = series_shape[0] * series_shape[2]
        return (batch, self.num_patches, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "lookback": self.lookback,
            "patch_len": self.patch_len,
            "stride": self.stride,
            "hidden_dim": self.hidden_dim,
            "time2vec_dim": self.time2vec_dim,
            "step_seconds": self.step_seconds,
            "dropout": self.dropout,
        })
        return config
