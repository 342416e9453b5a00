"""Position encodings for image patch grids: 2-D sin-cos or learned.

Shape legend: B batch, P = Gh * Gw patches in row-major order, Gh grid rows,
Gw grid columns, F features.
"""

import math
import numbers

import keras
from keras import ops

from keras_attention.layers.encodings._utils import check_positive_number, sinusoid
from keras_attention.utils.validation import check_rank


def _grid_size(grid_size):
    """Normalise `grid_size` (None, int or pair of ints) to None or `(Gh, Gw)`."""
    if grid_size is None:
        return None
    values = (grid_size, grid_size) if isinstance(grid_size, numbers.Integral) \
        else grid_size
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
        for v in values
    ):
        raise ValueError(
            "`grid_size` must be None, a positive int or a pair of positive ints "
            f"(rows, columns). Received: grid_size={grid_size!r}"
        )
    return (int(values[0]), int(values[1]))


@keras.saving.register_keras_serializable(package="keras_attention")
class PatchPositionEmbedding2D(keras.layers.Layer):
    """Position encoding of a grid of image patches, as in ViT (Dosovitskiy et al.
    2021, learned) and MAE (He et al. 2022, fixed 2-D sin-cos).

    Patches are numbered row by row: patch `r * Gw + c` sits at row `r` and
    column `c`. With `learned=False` the first half of the features is the 1-D
    sinusoidal encoding of the row (as in `SinusoidalPositionEncoding`, `F/2`
    features, wavelength base `base`) and the second half that of the column;
    `F` must be divisible by 4. With `learned=True` the layer holds a trainable
    `(P, F)` table instead. Either way it returns the encoding, broadcastable to
    the input, for the caller to add.

    Args:
        grid_size: `(rows, columns)` of the patch grid, or an int for a square
            grid. None takes a square grid of `sqrt(num_patches)` (the number of
            patches must then be known at build time and be a perfect square).
        learned: use a trainable table instead of the fixed sin-cos encoding.
        base: the wavelength base of the sin-cos encoding. A positive number.
        initializer: initializer of the learned table. Defaults to
            `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, num_patches, features)` with `num_patches = rows *
            columns`; only its shape is used.

    Returns:
        `(1, num_patches, features)` encoding in the compute dtype.

    Example:

    >>> patches = keras.random.normal((2, 14 * 14, 64))
    >>> pe = PatchPositionEmbedding2D(grid_size=14)
    >>> tuple((patches + pe(patches)).shape)
    (2, 196, 64)
    """

    def __init__(self, grid_size=None, learned=False, base=10000,
                 initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.grid_size = _grid_size(grid_size)
        if not isinstance(learned, bool):
            raise TypeError(f"`learned` must be a bool. Received: learned={learned!r}")
        self.learned = learned
        self.base = check_positive_number("base", base)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        check_rank("inputs", input_shape, 3, "(batch, num_patches, features)")
        num_patches, features = input_shape[1], input_shape[2]
        if features is None:
            raise ValueError(
                "`inputs` must have a known number of features (last axis). "
                f"Received: shape={tuple(input_shape)}"
            )
        if not self.learned and features % 4:
            raise ValueError(
                "`inputs` must have a number of features divisible by 4 for the 2-D "
                f"sin-cos encoding (use learned=True otherwise). "
                f"Received: shape={tuple(input_shape)}"
            )
        self._grid = self._resolve_grid(num_patches, input_shape)  # (Gh, Gw)
        self._features = features
        if self.learned:
            self.embeddings = self.add_weight(
                name="embeddings",
                shape=(self._grid[0] * self._grid[1], features),
                initializer=self.initializer,
            )

    def _resolve_grid(self, num_patches, shape):
        if self.grid_size is None:
            if num_patches is None:
                raise ValueError(
                    "`inputs` must have a known number of patches (axis 1) when "
                    f"`grid_size` is None. Received: shape={tuple(shape)}"
                )
            side = math.isqrt(num_patches)
            if side * side != num_patches:
                raise ValueError(
                    "`inputs` must have a square number of patches when `grid_size` "
                    f"is None; pass grid_size=(rows, columns). Received: "
                    f"shape={tuple(shape)}"
                )
            return (side, side)
        rows, cols = self.grid_size
        if num_patches is not None and num_patches != rows * cols:
            raise ValueError(
                f"`inputs` must have {rows * cols} patches for grid_size={self.grid_size}. "
                f"Received: shape={tuple(shape)}"
            )
        return self.grid_size

    def _check_call_shape(self, inputs):
        check_rank("inputs", inputs.shape, 3, "(batch, num_patches, features)")
        rows, cols = self._grid
        num_patches, features = inputs.shape[1], inputs.shape[2]
        if (num_patches is not None and num_patches != rows * cols) or (
                features is not None and features != self._features):
            raise ValueError(
                f"`inputs` must have shape (batch, {rows * cols}, {self._features}), "
                f"as when the layer was built. Received: shape={tuple(inputs.shape)}"
            )

    def call(self, inputs):
        self._check_call_shape(inputs)
        if self.learned:
            return ops.cast(self.embeddings[None], self.compute_dtype)  # (1, P, F)
        rows, cols = self._grid
        half = self._features // 2
        row_table = sinusoid(ops.arange(rows, dtype="float32"), half, self.base)  # (Gh, F/2)
        col_table = sinusoid(ops.arange(cols, dtype="float32"), half, self.base)  # (Gw, F/2)
        row_table = ops.broadcast_to(row_table[:, None, :], (rows, cols, half))
        col_table = ops.broadcast_to(col_table[None, :, :], (rows, cols, half))
        table = ops.concatenate([row_table, col_table], axis=-1)  # (Gh, Gw, F)
        table = ops.reshape(table, (1, rows * cols, 2 * half))  # (1, P, F)
        return ops.cast(table, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "grid_size": self.grid_size,
            "learned": self.learned,
            "base": self.base,
            "initializer": keras.initializers.serialize(self.initializer),
        })
        return config
