"""Linear (kernelised) attention: elu + 1, ReLU and Performer FAVOR+ feature maps.

Shape legend: B batch, T query length, S key length, F features, N query heads,
K key/value heads, H key head dim, V value head dim, O output features, M feature
dim (H for "elu"/"relu", the number of random features for "favor+").
"""

import math
import numbers

import keras
from keras import ops

from keras_attention import masks as masks_lib
from keras_attention.layers.attention.multi_head_attention import MultiHeadAttention
from keras_attention.layers.attention.variant_calls import project_heads, reject_cache
from keras_attention.layers.attention.variant_utils import (
    UNUSED_ARGUMENTS,
    check_no_logits_bias,
    reject_arguments,
)
from keras_attention.ops.attention import zero_rows
from keras_attention.ops.band import rows_with_keys, split_masks, static_le
from keras_attention.ops.linear import (
    FEATURE_MAPS,
    favor_random_features,
    linear_attention,
)
from keras_attention.utils.validation import check_bool, check_choice, check_positive_int

# No attention weights are formed, so there is no attention dropout.
_UNUSED = UNUSED_ARGUMENTS + ("dropout",)


def default_num_random_features(head_dim):
    """`round(H * ln(H))`, at least H (the default of `ops.linear_attention`)."""
    return max(head_dim, int(round(head_dim * math.log(head_dim))))


@keras.saving.register_keras_serializable(package="keras_attention")
class LinearAttention(MultiHeadAttention):
    """Linear attention of "Transformers are RNNs" (Katharopoulos et al. 2020) and
    Performer's FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with
    Performers").

    The softmax kernel `exp(q . k)` is replaced by `phi(q) . phi(k)` for a
    non-negative feature map `phi`, so that the key/value sums are formed once:
    `out_i = phi(q_i) sum_j phi(k_j) v_j^T / (phi(q_i) . sum_j phi(k_j))`. Time
    and memory grow linearly with the sequence length; no `(T, S)` tensor is
    formed. Computed with `keras_attention.ops.linear_attention`.

    Feature maps: `"elu"` is `elu(x) + 1` and `"relu"` is `relu(x)` (exact kernel
    attention, not softmax attention); `"favor+"` is Performer's positive
    orthogonal random features, an unbiased estimate of softmax attention whose
    error shrinks as `num_random_features` grows. The `(H, M)` random projection
    is drawn in `build()` from `seed` (`ops.favor_random_features`) and kept as a
    non-trainable weight named `random_features`, so it is saved and restored
    with the model; redraw it by assigning a new value to that weight. The
    weights are those of `MultiHeadAttention` (same order), preceded by
    `random_features` for `"favor+"`.

    With `causal=True` (or `use_causal_mask=True` at call time) the sums are
    prefix sums (query i attends keys `j <= i + (S - T)`), computed in chunks.

    Masks: `query_mask` and `value_mask`/`key_mask` (and Keras implicit masks)
    are supported: padded keys have no influence and padded query rows are
    zeros. A general `attention_mask (B, T, S)` cannot act through the key/value
    sums and raises a `ValueError`. The weights are never formed, so
    `return_attention_scores=True` raises a `ValueError`. There is no attention
    dropout. A key/value cache is not supported.

    Position encodings: only rotary embeddings (`"rotary"`); ALiBi, T5 and Shaw
    encodings add a `(T, S)` logits bias and raise a `ValueError`.

    Args:
        num_heads: number of query heads N.
        key_dim: size of each query/key head H.
        feature_map: `"elu"`, `"relu"` or `"favor+"`.
        num_random_features: M for `"favor+"`; defaults to `round(H * ln(H))`
            (at least H). Only for `"favor+"`.
        causal: if True, causal (prefix-sum) attention.
        seed: int seed of the FAVOR+ random projection (None: random).
        chunk_size: chunk length of the causal prefix sums.
        value_dim: size of each value head V; defaults to `key_dim`.
        num_key_value_heads: number of key/value heads K (divides `num_heads`).
        use_bias: whether the dense projections have biases.
        output_dim: output features; defaults to the query's features.
        position_encoding: `None` or a rotary encoding (instance, config or
            `"rotary"`).
        kernel_initializer, bias_initializer: dense projection initializers.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(B, T, F)`.
        value: `(B, S, F_v)`.
        key: `(B, S, F_k)`, defaults to `value`.
        query_mask, value_mask, key_mask: boolean `(B, T)` / `(B, S)` padding masks;
            filled from Keras implicit masks when not given.
        attention_mask: not supported (must be None).
        use_causal_mask: causal attention (same as `causal=True`).
        return_attention_scores: not supported (must be False).
        training: unused (no dropout).

    Returns:
        `output (B, T, O)`. Padded query rows and rows with no allowed key are
        zeros.

    Example:

    >>> x = keras.random.normal((2, 4096, 64))
    >>> layer = LinearAttention(num_heads=4, key_dim=16, feature_map="favor+",
    ...                         num_random_features=64, causal=True, seed=0)
    >>> layer(x, x).shape
    (2, 4096, 64)
    """

    supports_attention_scores = False

    def __init__(
        self,
        num_heads,
        key_dim,
        feature_map="elu",
        num_random_features=None,
        causal=False,
        seed=None,
        chunk_size=128,
        value_dim=None,
        num_key_value_heads=None,
        use_bias=True,
        output_dim=None,
        position_encoding=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        reject_arguments(type(self).__name__, kwargs, _UNUSED)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"`seed` must be an int or None. Received: seed={seed!r}")
        super().__init__(
            num_heads,
            key_dim,
            value_dim=value_dim,
            num_key_value_heads=num_key_value_heads,
            use_bias=use_bias,
            output_dim=output_dim,
            position_encoding=position_encoding,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            **kwargs,
        )
        self.feature_map = check_choice("feature_map", feature_map, FEATURE_MAPS)
        self.num_random_features = check_positive_int(
            "num_random_features", num_random_features, allow_none=True
        )
        if num_random_features is not None and feature_map != "favor+":
            raise ValueError(
                "`num_random_features` only applies to feature_map='favor+'. Received: "
                f"num_random_features={num_random_features}, feature_map={feature_map!r}"
            )
        self.causal = check_bool("causal", causal)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        check_no_logits_bias(type(self).__name__, self.position_encoding, position_encoding)
        self.random_features = None

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self.feature_map == "favor+":
            h = self.key_dim
            m = self.num_random_features or default_num_random_features(h)

            def initializer(shape, dtype=None):
                return ops.cast(favor_random_features(h, m, seed=self.seed), dtype)

            self.random_features = self.add_weight(
                name="random_features", shape=(h, m), initializer=initializer,
                trainable=False,
            )  # (H, M)

    # ------------------------------------------------------------------ masks
    def _merge_masks(self, query, key, query_mask, value_mask, key_mask, attention_mask,
                     key_length=None):
        masks = split_masks(self._check_mask, query, key, query_mask, value_mask,
                            key_mask, attention_mask, key_length)
        if masks.full is not None:
            raise ValueError(
                "LinearAttention supports padding masks (query_mask, value_mask, "
                "key_mask) only: a (B, T, S) mask cannot act through the key/value sums. "
                f"Received: attention_mask with shape={tuple(masks.full.shape)}"
            )
        return masks

    @staticmethod
    def _valid_rows(mask, use_causal_mask, query_length, key_length, query_start):
        return None  # rows are zeroed in `_compute_attention`, from the vectors

    # ------------------------------------------------------------------ attention
    def _compute_attention(self, query, key, value, mask, use_causal_mask, training,
                           return_attention_scores, cache=None, cache_index=None):
        reject_cache(type(self).__name__, cache)
        q, k, v = project_heads(self, query, key, value)  # (B, T, N, H), (B, S, K, H|V)
        causal = self.causal or use_causal_mask
        output, _ = self._attend(q, k, v, mask=mask.key, bias=None, causal=causal,
                                 training=training, return_weights=False)  # (B, T, N, V)
        rows = None
        # Rows with no key: padded keys, queries before the first key when causal, or
        # no key at all (S == 0; the output projection's bias must not leak out).
        no_keys = not static_le(1, k.shape[1])
        if (mask.key is not None or no_keys
                or (causal and not static_le(q.shape[1], k.shape[1]))):
            t, s = ops.shape(q)[1], ops.shape(k)[1]
            rows = rows_with_keys(mask.key, t, s, None, causal)  # (B|1, T)
        rows = masks_lib.merge_masks(rows, mask.query)
        output = zero_rows(self._output_dense(output), rows)  # (B, T, O)
        return output, None

    def _attend(self, query, key, value, mask, bias, causal, training, return_weights):
        """Linear attention on per-head tensors; `mask` is None or a key padding
        mask `(B, S)`. Returns `(output (B, T, N, V), None)`."""
        if bias is not None or return_weights:
            raise ValueError(
                f"{type(self).__name__} forms neither logits nor weights. Received: "
                f"bias={'given' if bias is not None else None}, "
                f"return_weights={return_weights}"
            )
        output = linear_attention(
            query, key, value, feature_map=self.feature_map,
            causal=bool(causal or self.causal), mask=mask,
            random_features=self.random_features, chunk_size=self.chunk_size,
        )  # (B, T, N, V)
        return output, None

    def get_config(self):
        config = super().get_config()
        for name in _UNUSED:
            config.pop(name)
        config.update(
            {
                "feature_map": self.feature_map,
                "num_random_features": self.num_random_features,
                "causal": self.causal,
                "chunk_size": self.chunk_size,
            }
        )
        return config
