"""Base class of every attention layer: the `keras.layers.MultiHeadAttention` call
convention, input checks, masks, capabilities and zeros for fully masked query rows.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads (N % K == 0), H key head dim, V value head dim, O output features.

`BaseAttention.call` is the only `call` of the attention family. Layers with query,
key, value and output projections subclass `ProjectedAttention`, which owns the
projections and everything around them, and override one per-head hook:

    def _attend_heads(self, query, key, value, masks, *, use_causal_mask, training,
                      return_weights, bias=None):
        ...
        return output, weights, rows

Arguments of the hook:

- `query (B, T, N, H)`, `key (B, S, K, H)`, `value (B, S, K, V)`: the projected
  heads, already transformed by a rotary position encoding and, with a key/value
  cache, read from the updated cache (S is then the cache length).
- `masks`: an `AttentionMasks` of booleans, True where attention is allowed, kept
  apart so that nothing forms a `(T, S)` tensor unless the caller gave one:
  `query (B, T)` the real query rows (the base zeroes the others; the hook may
  ignore it), `key (B|1, S)` the keys that may be attended (value and key masks,
  and the written slots of a cache), `full (B|1, T, S)` the explicit
  `attention_mask` (only for layers that declare `supports_attention_mask`), and
  `query_start`, the key position of query 0 when a cache is used (None: query i
  sits at key position `i + S - T`, bottom-right, as in `masks.causal_mask`).
- `use_causal_mask`: query i attends only keys at or before its position.
- `training`: a Python bool or None; dropout applies when it is true.
- `return_weights`: the caller needs the `(B, N, T, S)` weights (scores asked for,
  an attention recorder, or a position encoding that reads them).
- `bias`: None, or a float32 logits bias broadcastable to `(B, N, T, S)` from the
  position encoding (ALiBi, T5, Shaw). Only layers that declare
  `supports_logits_bias` ever receive one.

It returns `output (B, T, N, V)` in the query's dtype, `weights (B, N, T, S)` or
None (never None when `return_weights`), and `rows (B|1, T)` or None: True where
a query row attended at least one key. None lets the base derive the rows from
`masks` and the causal flag as for full attention (`_rows`); a hook that restricts
the keys further (a band, a sparse pattern) returns its own rows. Rows with no
allowed key must be finite; the base turns them into zeros.

The base does the rest, once for every layer: checks inputs and masks, raises the
errors of undeclared capabilities, folds `attention_axes` of higher-rank inputs
into sequences, projects, applies the position encoding and the cache, adds a
position encoding's value term, applies the analysis head mask and the gate,
combines the heads with the output projection, and zeroes the rows of padded
queries and of queries with no allowed key (output and weights).

Capabilities are class attributes; the base raises a `ValueError` naming the
argument when a call needs one the layer lacks:

- `supports_attention_scores`: can return the full weight matrix.
- `supports_cache`: takes `cache`/`cache_index` (key/value cache for decoding).
- `supports_cross_attention`: `value` may differ from `query`.
- `supports_attention_mask`: takes an explicit `attention_mask`.
- `supports_logits_bias`: takes position encodings that add a logits bias.

Layers without projections (additive, Luong, monotonic, cross-modal attention)
and variants not yet on the per-head hook implement the older whole-layer hook
`_compute_attention(query, key, value, mask, use_causal_mask, training,
return_attention_scores)` with the masks merged into one `(B, T, S)` tensor;
`call` routes each layer to the hook it implements.
"""

import collections
import functools

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.ops.band import rows_with_keys, static_le
from keras_attention.utils.validation import check_call_inputs, check_floating, check_rank


def _clear_keras_mask(x):
    """Drop the implicit Keras mask a tensor carries (it was passed as an argument)."""
    if getattr(x, "_keras_mask", None) is not None:
        try:
            x._keras_mask = None
        except AttributeError:
            pass


#: The call's masks, kept apart (see the module docstring).
AttentionMasks = collections.namedtuple(
    "AttentionMasks", ["query", "key", "full", "query_start"], defaults=[None] * 4
)

# Methods of the whole-layer hook; a class that overrides one of them below the
# class that defines `_attend_heads` still runs on the whole-layer hook.
_WHOLE_LAYER_HOOKS = ("_compute_attention", "_attend", "_merge_masks", "_valid_rows")


def _owner(cls, name):
    """The class in `cls`'s MRO that defines `name`, or None."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


@functools.cache
def _uses_head_hook(cls):
    """True when `cls` runs on `_attend_heads`, False on `_compute_attention`."""
    owner = _owner(cls, "_attend_heads")
    if owner is None or owner is BaseAttention:
        return False
    for name in _WHOLE_LAYER_HOOKS:
        other = _owner(cls, name)
        if other is not None and other is not owner and issubclass(other, owner):
            return False
    return True


def key_rows(key_valid, query_length, key_length, query_start=None, window_size=None,
             causal=False):
    """`(B|1, T)`: True where query i has an allowed key in its range (see
    `ops.band.rows_with_keys`), or None when every row statically has one."""
    if key_valid is None and (query_start is not None
                              or static_le(query_length, key_length)):
        return None  # every query sits on a key, which is inside its range
    return rows_with_keys(key_valid, query_length, key_length, window_size=window_size,
                          causal=causal, query_start=query_start)


class CheckedInputs:
    """Mixin for a Keras layer: text or object arrays passed to the layer raise a
    `TypeError` naming the argument, before the backend tries to convert them."""

    def __call__(self, *args, **kwargs):
        check_call_inputs(self.call, args, kwargs)
        return super().__call__(*args, **kwargs)


class BaseAttention(CheckedInputs, keras.layers.Layer):
    """Shared call convention of the attention layers (not used directly).

    See the module docstring for the per-head hook `_attend_heads` and the
    capabilities a subclass declares. `supports_attention_scores = False` marks a
    layer that cannot form a full weight matrix cheaply; asking it for scores
    raises a `ValueError`.

    Two hooks serve `keras_attention.analysis`: an attention recorder (set by
    `capture_attention`) makes every call compute its weights and pass them to the
    recorder, and a head mask (set by `mask_heads`) scales the per-head outputs
    before the output projection (`_mask_heads`).
    """

    supports_attention_scores = True
    supports_cache = False
    supports_cross_attention = True
    supports_attention_mask = True
    supports_logits_bias = True

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
        self._check_batch_sizes(query_shape, value_shape, key_shape)

    @staticmethod
    def _check_batch_sizes(query_shape, value_shape, key_shape=None):
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
        s = ops.shape(key)[1] if key_length is None else key_length
        masks = self._split_masks(query, s, query_mask, value_mask, key_mask,
                                  attention_mask)
        return masks_lib.merge_masks(
            None if masks.query is None else masks.query[:, :, None],  # (B, T, 1)
            None if masks.key is None else masks.key[:, None, :],  # (B, 1, S)
            masks.full,  # (B|1, T, S)
        )

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
            if query_start is not None or static_le(query_length, key_length):
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
        cache=None,
        cache_index=None,
    ):
        if cache is None and cache_index is not None:
            raise ValueError(
                "`cache_index` is only used together with `cache`. "
                f"Received: cache=None, cache_index={cache_index!r}"
            )
        if cache is not None and not self.supports_cache:
            raise ValueError(
                f"{type(self).__name__} does not support a key/value cache. Received: "
                f"cache with shape={tuple(cache.shape)}"
            )
        if not _uses_head_hook(type(self)):
            extra = {}
            if cache is not None:
                self._check_cache(cache, cache_index, query)
                extra = dict(key_length=ops.shape(cache)[2], query_start=cache_index,
                             cache=cache, cache_index=cache_index)
            return self._attention_call(
                query, value, key, query_mask, value_mask, key_mask, attention_mask,
                use_causal_mask, return_attention_scores, training, **extra,
            )
        query, value, key = self._checked_inputs(query, value, key)
        self._check_capabilities(query, value, key, attention_mask, return_attention_scores)
        if cache is not None:
            self._check_cache(cache, cache_index, query)
        return self._forward(
            query, value, key, query_mask, value_mask, key_mask, attention_mask,
            bool(use_causal_mask), bool(return_attention_scores), training, cache,
            cache_index,
        )

    def _checked_inputs(self, query, value, key):
        """Floating inputs of equal rank (3, or more for `attention_axes`) with the
        same batch size; `key` defaults to `value`. Clears their implicit masks."""
        for name, x in (("query", query), ("value", value), ("key", key)):
            if x is not None:
                check_floating(name, x)
        key = value if key is None else key
        for x in (query, value, key):
            _clear_keras_mask(x)  # masks arrive as arguments; sublayers must not see them
        rank = len(query.shape)
        layout = "(batch, seq, features)"
        if not self._folds_axes() or rank < 3:
            check_rank("query", query.shape, 3, layout)
        for name, x in (("value", value), ("key", key)):
            check_rank(name, x.shape, rank, "equal to the query's" if rank > 3 else layout)
        self._check_key_value_shapes(value.shape, key.shape)
        self._check_batch_sizes(query.shape, value.shape, key.shape)
        return query, value, key

    @staticmethod
    def _check_key_value_shapes(value_shape, key_shape):
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, must be "
                f"equal. Received: value_shape={tuple(value_shape)} and "
                f"key_shape={tuple(key_shape)}"
            )

    def _folds_axes(self):
        """Whether inputs of rank > 3 are accepted (attention over several axes)."""
        return False

    def _check_capabilities(self, query, value, key, attention_mask, return_scores):
        name = type(self).__name__
        if return_scores and not self.supports_attention_scores:
            raise ValueError(
                f"{name} does not form a full attention weight matrix, so it cannot "
                "return attention scores. Received: return_attention_scores=True"
            )
        if not self.supports_cross_attention and (value is not query or key is not value):
            raise ValueError(
                f"{name} only does self-attention: `value` and `key` must be the "
                "`query` tensor itself. Received: a different value or key tensor"
            )
        if attention_mask is not None and not self.supports_attention_mask:
            raise ValueError(
                f"{name} does not take an explicit `attention_mask` (use "
                "`query_mask`/`value_mask`). Received: attention_mask with "
                f"shape={tuple(attention_mask.shape)}"
            )

    def _check_cache(self, cache, cache_index, query):
        """Raise unless `cache` and `cache_index` fit this layer."""

    def _forward(self, query, value, key, query_mask, value_mask, key_mask,
                 attention_mask, use_causal_mask, return_attention_scores, training,
                 cache, cache_index):
        """Everything around `_attend_heads`: implemented by `ProjectedAttention`."""
        raise NotImplementedError(f"{type(self).__name__} must implement _forward")

    def _attend_heads(self, query, key, value, masks, *, use_causal_mask, training,
                      return_weights, bias=None):
        """The per-head hook; see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} must implement _attend_heads")

    # ------------------------------------------------------------------ vector masks
    def _split_masks(self, query, key_length, query_mask, value_mask, key_mask,
                     attention_mask):
        """The call's masks as an `AttentionMasks` of booleans, shapes checked.

        `attention_mask` may be `(T, S)`, `(1, T, S)` or `(B, T, S)` (any axis of
        size 1 broadcasts, as in Keras); it becomes `(B|1, T, S)`.
        """
        b, t = query.shape[0], query.shape[1]
        s = key_length if isinstance(key_length, int) else None
        query_valid = None
        if query_mask is not None:
            query_mask = ops.convert_to_tensor(query_mask)
            self._check_mask("query_mask", query_mask, (b, t))
            query_valid = ops.cast(query_mask, "bool")  # (B, T)
        key_valid = None
        for name, m in (("value_mask", value_mask), ("key_mask", key_mask)):
            if m is not None:
                m = ops.convert_to_tensor(m)
                self._check_mask(name, m, (b, s))
                key_valid = masks_lib.merge_masks(key_valid, m)  # (B, S)
        full = None
        if attention_mask is not None:
            full = self._broadcast_attention_mask(attention_mask, b, t, s,
                                                  ops.shape(query)[1], key_length)
        return AttentionMasks(query_valid, key_valid, full)

    @staticmethod
    def _broadcast_attention_mask(mask, b, t, s, t_dyn, s_dyn):
        """`(T, S)`, `(1, T, S)` or `(B, T, S)` (axes of size 1 broadcast) ->
        boolean `(B|1, T, S)`."""
        mask = ops.convert_to_tensor(mask)
        shape = tuple(mask.shape)
        ok = len(shape) in (2, 3)
        if ok:
            full = (1,) * (3 - len(shape)) + shape
            ok = all(got in (1, None) or want is None or got == want
                     for got, want in zip(full, (b, t, s)))
        if not ok:
            raise ValueError(
                "`attention_mask` must have shape (batch, query_len, key_len) = "
                f"{(b, t, s)}, or broadcast to it ((query_len, key_len) or "
                f"(1, query_len, key_len)). Received: shape={shape}"
            )
        mask = ops.cast(mask, "bool")
        if len(shape) == 2:
            mask = mask[None]
        if any(got == 1 and want != 1 for got, want in zip(shape[-2:], (t, s))):
            mask = ops.broadcast_to(mask, (ops.shape(mask)[0], t_dyn, s_dyn))
        return mask

    @staticmethod
    def _rows(masks, use_causal_mask, query_length, key_length):
        """`(B|1, T)` rows with at least one allowed key under full attention
        restricted by `masks` and the causal flag, or None when all rows have one.
        Forms a `(T, S)` tensor only when `masks.full` is given."""
        if masks.full is None:
            return key_rows(masks.key, query_length, key_length, masks.query_start,
                            causal=use_causal_mask)
        parts = [masks.full]
        if masks.key is not None:
            parts.append(masks.key[:, None, :])  # (B, 1, S)
        if use_causal_mask:
            parts.append(masks_lib.causal_mask(query_length, key_length,
                                               masks.query_start)[None])  # (1, T, S)
        return ops.any(masks_lib.merge_masks(*parts), axis=-1)  # (B|1, T)

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
