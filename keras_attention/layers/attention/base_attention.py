"""Base class of every attention layer: the `keras.layers.MultiHeadAttention` call
convention, input checks, mask merging and zeros for fully masked query rows.

Shape legend: B batch, T query length, S key length, F features.

A subclass implements one hook, `_compute_attention`, and inherits everything else,
so every layer takes the same call arguments and follows the same mask rules.
"""

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.utils.validation import check_call_inputs, check_floating, check_rank


def _clear_keras_mask(x):
    """Drop the implicit Keras mask a tensor carries (it was passed as an argument)."""
    if getattr(x, "_keras_mask", None) is not None:
        try:
            x._keras_mask = None
        except AttributeError:
            pass


def _static_le(a, b):
    """True when both sizes are static Python ints and a <= b."""
    return isinstance(a, int) and isinstance(b, int) and a <= b


class CheckedInputs:
    """Mixin for a Keras layer: text or object arrays passed to the layer raise a
    `TypeError` naming the argument, before the backend tries to convert them."""

    def __call__(self, *args, **kwargs):
        check_call_inputs(self.call, args, kwargs)
        return super().__call__(*args, **kwargs)


class BaseAttention(CheckedInputs, keras.layers.Layer):
    """Shared call convention of the attention layers (not used directly).

    Subclasses override `_compute_attention` and may set
    `supports_attention_scores = False` when they cannot form a full weight matrix
    cheaply; asking such a layer for scores raises a `ValueError`.

    Two hooks serve `keras_attention.analysis`: an attention recorder (set by
    `capture_attention`) makes every call compute its weights and pass them to the
    recorder, and a head mask (set by `mask_heads`) scales the per-head outputs
    before the output projection (subclasses apply it with `_mask_heads`).
    """

    supports_attention_scores = True

    # Analysis hooks (see `keras_attention.analysis`): set on an instance by
    # `capture_attention` and `mask_heads` for the duration of a `with` block. They
    # are None otherwise, and then calls take the unchanged path.
    _attention_recorder = None  # receives the weights of every call
    _head_mask = None  # (N,) factors of the per-head outputs

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    # ------------------------------------------------------------------ analysis hooks
    def __call__(self, *args, **kwargs):
        recorder = self._attention_recorder
        if recorder is None:
            return super().__call__(*args, **kwargs)
        # Capturing: always compute the weights, hand them to the recorder, and give
        # the caller the structure it asked for.
        reason = self._attention_scores_unavailable()
        if reason is not None:
            raise recorder.refusal(self, reason)
        # Keras takes only tensors positionally, so the flag is always a keyword.
        wanted = bool(kwargs.pop("return_attention_scores", False))
        output, scores, *rest = super().__call__(*args, return_attention_scores=True,
                                                 **kwargs)
        recorder.record(self, scores)
        if wanted:
            return (output, scores, *rest)
        return (output, *rest) if rest else output

    def _attention_scores_unavailable(self):
        """Why this layer cannot return its attention weights, or None if it can."""
        if not self.supports_attention_scores:
            return (
                f"{type(self).__name__} never forms a full (batch, heads, query_len, "
                "key_len) attention weight matrix"
            )
        return None

    def _mask_heads(self, output):
        """Scale the per-head outputs `(B, T, N, V)` by the head mask, if one is set.

        Subclasses call this on the per-head outputs just before the output
        projection combines the heads.
        """
        head_mask = self._head_mask
        if head_mask is None:
            return output
        if output.shape[2] is not None and output.shape[2] != len(head_mask):
            raise ValueError(
                f"The head mask of layer '{self.name}' must have one entry per head "
                f"({output.shape[2]}). Received: head_mask with shape=({len(head_mask)},)"
            )
        self._head_mask_applied = True
        factors = ops.convert_to_tensor(head_mask, dtype=output.dtype)
        return output * factors[None, None, :, None]  # (B, T, N, V)

    # ------------------------------------------------------------------ checks
    def _check_input_shapes(self, query_shape, value_shape, key_shape=None):
        check_rank("query", query_shape, 3, "(batch, seq, features)")
        check_rank("value", value_shape, 3, "(batch, seq, features)")
        if key_shape is not None:
            check_rank("key", key_shape, 3, "(batch, seq, features)")
            if None not in (key_shape[1], value_shape[1]) and key_shape[1] != value_shape[1]:
                raise ValueError(
                    "`key` and `value` must have the same sequence length. "
                    f"Received: key.shape={tuple(key_shape)}, value.shape={tuple(value_shape)}"
                )
        shapes = [("query", query_shape), ("value", value_shape)]
        if key_shape is not None:
            shapes.append(("key", key_shape))
        known = [(name, shape) for name, shape in shapes if shape[0] is not None]
        if len({shape[0] for _, shape in known}) > 1:
            received = ", ".join(f"{name}.shape={tuple(shape)}" for name, shape in known)
            raise ValueError(
                f"`query`, `value` and `key` must have the same batch size. Received: {received}"
            )

    @staticmethod
    def _check_mask(name, mask, expected):
        """Check a boolean mask's static shape against `expected` (None = unknown)."""
        shape = tuple(mask.shape)
        if len(shape) != len(expected) or any(
            a is not None and b is not None and a != b for a, b in zip(shape, expected)
        ):
            raise ValueError(
                f"`{name}` must have shape {tuple(expected)}. Received: shape={shape}"
            )

    # ------------------------------------------------------------------ masks
    def _merge_masks(self, query, key, query_mask, value_mask, key_mask, attention_mask,
                     key_length=None):
        """AND of the masks as one boolean `(B, T, S)` tensor, or None."""
        b, t = query.shape[0], query.shape[1]
        s = key.shape[1] if key_length is None else key_length
        parts = []
        if query_mask is not None:
            query_mask = ops.convert_to_tensor(query_mask)
            self._check_mask("query_mask", query_mask, (b, t))
            parts.append(ops.cast(query_mask, "bool")[:, :, None])  # (B, T, 1)
        for name, m in (("value_mask", value_mask), ("key_mask", key_mask)):
            if m is not None:
                m = ops.convert_to_tensor(m)
                self._check_mask(name, m, (b, s))
                parts.append(ops.cast(m, "bool")[:, None, :])  # (B, 1, S)
        if attention_mask is not None:
            attention_mask = ops.convert_to_tensor(attention_mask)
            self._check_mask("attention_mask", attention_mask, (b, t, s))
            parts.append(ops.cast(attention_mask, "bool"))  # (B, T, S)
        return masks_lib.merge_masks(*parts)

    @staticmethod
    def _valid_rows(mask, use_causal_mask, query_length, key_length, query_start):
        """`(B|1, T)` True for query rows that attend at least one key, or None."""
        rows = None
        if isinstance(key_length, int) and key_length == 0:
            return ops.zeros((1, query_length), dtype="bool")  # no key: every row is empty
        if mask is not None:
            if use_causal_mask:
                mask = ops.logical_and(
                    mask,
                    masks_lib.causal_mask(query_length, key_length, query_start)[None],
                )
            rows = ops.any(mask, axis=-1)  # (B, T)
        elif use_causal_mask:
            # Bottom-right causal rows are empty only before position 0: O(T), no (T, S).
            # With a cache (query_start given) or T <= S no row is empty.
            if query_start is not None or _static_le(query_length, key_length):
                return None
            start = key_length - query_length
            positions = ops.arange(query_length, dtype="int32") + ops.cast(start, "int32")
            rows = ops.greater_equal(positions, 0)[None]  # (1, T)
        return rows

    # ------------------------------------------------------------------ call
    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        return self._attention_call(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            use_causal_mask, return_attention_scores, training,
        )

    def _attention_call(self, query, value, key, query_mask, value_mask, key_mask,
                        attention_mask, use_causal_mask, return_attention_scores,
                        training, key_length=None, query_start=None, **extra):
        """Shared body of `call`; `extra` goes to `_compute_attention` (e.g. a cache)."""
        check_floating("query", query)
        check_floating("value", value)
        if key is not None:
            check_floating("key", key)
        key = value if key is None else key
        for x in (query, value, key):
            _clear_keras_mask(x)  # masks arrive as arguments; sublayers must not see them
        self._check_input_shapes(query.shape, value.shape, key.shape)
        if return_attention_scores and not self.supports_attention_scores:
            raise ValueError(
                f"{type(self).__name__} does not form a full attention weight matrix, "
                "so it cannot return attention scores. Received: "
                "return_attention_scores=True"
            )
        mask = self._merge_masks(query, key, query_mask, value_mask, key_mask,
                                 attention_mask, key_length)
        if self._head_mask is not None:
            self._head_mask_applied = False
        result = self._compute_attention(
            query, key, value, mask=mask, use_causal_mask=bool(use_causal_mask),
            training=training, return_attention_scores=return_attention_scores, **extra,
        )
        if self._head_mask is not None and not self._head_mask_applied:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) does not support head "
                "masking: it combines its heads without the shared per-head output "
                "hook. Received: a head mask for this layer"
            )
        output, scores, *rest = result
        s = ops.shape(key)[1] if key_length is None else key_length
        rows = self._valid_rows(mask, use_causal_mask, ops.shape(query)[1], s, query_start)
        if rows is not None:
            output = output * ops.cast(rows[:, :, None], output.dtype)  # zeros, not bias
        if return_attention_scores:
            return (output, scores, *rest)
        return (output, *rest) if rest else output

    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, **extra):
        """Return `(output (B, T, F_out), scores (B, N, T, S) or None, *extra_outputs)`.

        `mask` is the merged boolean `(B, T, S)` mask or None; the causal mask is
        not included in it (apply it when `use_causal_mask` is True).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _compute_attention")
