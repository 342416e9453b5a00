"""The output of a retrieval-augmented captioner: generate a word, or copy one
from the retrieved captions.

Shape legend: B batch, T caption positions, D hidden size, M memory positions
(P patches, then R = K * L retrieved words), V vocabulary.
"""

import math

import keras
from keras import ops

from zoo.captioner.vocabulary import Vocabulary

_NEG = -1e9


@keras.saving.register_keras_serializable(package="keras_attention_zoo")
class CopyHead(keras.layers.Layer):
    """Pointer-generator output over the retrieved captions' words.

    The next-word distribution mixes the decoder's softmax over the
    vocabulary with a copy distribution over the retrieved words (See, Liu and
    Manning 2017, "Get To The Point: Summarization with Pointer-Generator
    Networks"): `p(w) = g * softmax(logits)_w + (1 - g) * sum_{j: id_j = w} a_j`,
    where `a` is a single-head scaled dot-product attention from the decoder
    state `h` to the retrieved words of the memory (`[PAD]` words masked) and
    `g = sigmoid(w_g . [h; c] + b_g)` is a learned gate per position, with
    `c = sum_j a_j m_j` the attended words' memory vectors. A word seen
    once in training can then be written whenever a neighbour's caption
    holds it, however little the output layer learned about it.

    With `caption_length` set, the head also knows where it is in each
    retrieved caption: a retrieved word whose predecessor in its caption
    (`[START]` for a first word) is the decoder's current input word gets a
    learned bonus `b` on its copy score, and the copy weight on such
    successors, `s = sum_j a_j [prev_j = x_t]`, joins the gate's input,
    `g = sigmoid(w_g . [h; c; s] + b_g)`. Copying a neighbour's caption word
    after word then takes one learned step rather than the decoder having
    to locate its last word among the K * L retrieved words.

    Args:
        num_patches: P, the memory positions before the retrieved words.
        caption_length: L, the words of each retrieved caption, to find each
            word's predecessor; None (default) leaves successors out.

    Call arguments:
        hidden: `(B, T, D)` final decoder states.
        memory: `(B, M, D)` the decoder's memory.
        memory_mask: `(B, M)` bool, True on patches and real words.
        word_ids: `(B, R)` token ids of the retrieved words in memory order,
            or `(B, K, L)` (flattened to R = K * L).
        logits: `(B, T, V)` the decoder's vocabulary logits.
        tokens: `(B, T)` int32 decoder input words (`[START]` first); needed
            with `caption_length`, ignored without it.

    Returns:
        `(B, T, V)` float32 log-probabilities (normalised, so `log_softmax`
        leaves them unchanged).

    Example:

    >>> log_probs = CopyHead(num_patches=64)(hidden, memory, mask, ids, logits)
    """

    def __init__(self, num_patches, caption_length=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_patches = int(num_patches)
        if self.num_patches < 0:
            raise ValueError(f"`num_patches` must be >= 0. Received: num_patches={num_patches}")
        if caption_length is not None and (isinstance(caption_length, bool) or not isinstance(
                caption_length, int) or caption_length < 1):
            raise ValueError("`caption_length` must be None or a positive int. "
                             f"Received: caption_length={caption_length}")
        self.caption_length = caption_length

    def build(self, hidden_shape, memory_shape, memory_mask_shape, word_ids_shape, logits_shape,
              tokens_shape=None):
        dim = hidden_shape[-1]
        words = math.prod(word_ids_shape[1:]) if None not in word_ids_shape[1:] else None
        if memory_shape[-1] != dim or memory_shape[1] is not None and words is not None \
                and memory_shape[1] != self.num_patches + words:
            raise ValueError(
                f"Expected memory (B, {self.num_patches} + R, {dim}) for word ids (B, R). "
                f"Received: memory={memory_shape}, word_ids={word_ids_shape}"
            )
        if self.caption_length is not None:
            if words is not None and words % self.caption_length:
                raise ValueError(
                    f"Expected word ids (B, K * {self.caption_length}) with "
                    f"caption_length={self.caption_length}. Received: word_ids={word_ids_shape}")
            if tokens_shape is None or len(tokens_shape) != 2:
                raise ValueError("With `caption_length`, CopyHead needs `tokens` (B, T). "
                                 f"Received: tokens={tokens_shape}")
            self.successor_bonus = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(1.0), name="successor_bonus")
        self.query = keras.layers.Dense(dim, use_bias=False, dtype=self.dtype_policy,
                                        name="query")
        self.key = keras.layers.Dense(dim, use_bias=False, dtype=self.dtype_policy, name="key")
        self.gate = keras.layers.Dense(1, dtype=self.dtype_policy, name="gate")
        self.query.build(hidden_shape)
        self.key.build(memory_shape)
        extra = 0 if self.caption_length is None else 1
        self.gate.build((*hidden_shape[:-1], 2 * dim + extra))

    def successors(self, word_ids, tokens):
        """`(B, T, R)` float, 1 where retrieved word j follows input word t in
        its caption (`[START]` precedes each caption's first word)."""
        rows = ops.reshape(word_ids, (ops.shape(word_ids)[0], -1, self.caption_length))
        start = ops.full_like(rows[:, :, :1], Vocabulary.start_id)
        previous = ops.concatenate([start, rows[:, :, :-1]], axis=2)  # (B, K, L)
        previous = ops.reshape(previous, (ops.shape(word_ids)[0], -1))  # (B, R)
        match = ops.equal(ops.cast(tokens, "int32")[:, :, None], previous[:, None, :])
        return ops.cast(match, "float32")

    def copy_weights(self, hidden, memory, memory_mask, word_ids=None, tokens=None):
        """`(B, T, R)` copy attention `a` and `(B, T, 1)` gate `g` (see class doc)."""
        hidden = ops.cast(hidden, "float32")
        words = ops.cast(memory[:, self.num_patches:], "float32")  # (B, R, D)
        word_mask = memory_mask[:, self.num_patches:]  # (B, R)
        scores = ops.einsum("btd,brd->btr", self.query(hidden), self.key(words))
        scores = scores / math.sqrt(hidden.shape[-1])
        if self.caption_length is not None:
            follows = self.successors(word_ids, tokens)
            scores = scores + self.successor_bonus * follows
        scores = ops.where(word_mask[:, None, :], scores, _NEG)
        weights = ops.softmax(scores, axis=-1)  # (B, T, R)
        features = [hidden, ops.einsum("btr,brd->btd", weights, words)]
        if self.caption_length is not None:
            features.append(ops.sum(weights * follows, axis=-1, keepdims=True))
        return weights, ops.sigmoid(self.gate(ops.concatenate(features, axis=-1)))

    def call(self, hidden, memory, memory_mask, word_ids, logits, tokens=None):
        vocabulary = logits.shape[-1]
        word_ids = ops.reshape(word_ids, (ops.shape(word_ids)[0], -1))  # (B, R)
        weights, gate = self.copy_weights(hidden, memory, memory_mask, word_ids, tokens)
        one_hot = ops.one_hot(word_ids, vocabulary, dtype="float32")  # (B, R, V)
        copied = ops.einsum("btr,brv->btv", weights, one_hot)  # (B, T, V)
        generated = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        mixed = gate * generated + (1.0 - gate) * copied
        return ops.log(ops.maximum(mixed, 1e-12))

    def compute_output_spec(self, hidden, memory, memory_mask, word_ids, logits, tokens=None):
        return keras.KerasTensor(logits.shape, "float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_patches=self.num_patches, caption_length=self.caption_length)
        return config
