"""Cached decoding of the captioner backbone: greedy and beam search.

Written with `keras.ops` (the loop with `keras.ops.while_loop`), so the same code
runs eagerly, inside a `tf.function`, and so inside the exported SavedModel.

Shape legend: B batch, K beam width, M memory positions (the P patches, plus
the retrieved words with retrieval), D hidden size, L decoder positions
(`max_caption_length`), V vocabulary.
"""

from keras import ops

from zoo.captioner.vocabulary import Vocabulary

_NEG = -1e9


class DecoderParts:
    """The layers of a backbone (see `build_backbone`) used step by step."""

    def __init__(self, backbone):
        self.encoder = backbone.get_layer("image_encoder")
        names = {layer.name for layer in backbone.layers}
        self.retrieval = backbone.get_layer("retrieval") if "retrieval" in names else None
        self.memory = backbone.get_layer("caption_memory") if self.retrieval else None
        self.fusion_blocks = [backbone.get_layer(f"fusion_block_{i}") for i in range(len(
            [n for n in names if n.startswith("fusion_block_")]))]
        self.fusion_norm = backbone.get_layer("fusion_norm") if self.retrieval else None
        self.token_embedding = backbone.get_layer("token_embedding")
        self.position_embedding = backbone.get_layer("position_embedding")
        self.blocks = []
        while True:
            try:
                self.blocks.append(backbone.get_layer(f"decoder_block_{len(self.blocks)}"))
            except ValueError:
                break
        self.norm = backbone.get_layer("decoder_norm")
        self.head = backbone.get_layer("logits")
        self.copy = backbone.get_layer("copy_head") if self.retrieval else None
        self.max_length = self.position_embedding.max_length

    def encode_image(self, images):
        """`(B, S, S, 3)` -> patch features `(B, P, D)`."""
        return self.encoder(images, training=False)

    def encode(self, images, exclude=None):
        """The context the decoder reads, for `(B, S, S, 3)` images.

        Returns `(memory, mask, word_ids)`. Without retrieval: patch features
        `(B, P, D)`, None, None. With retrieval: patches and retrieved words
        `(B, M, D)`, their mask `(B, M)` and the retrieved words' ids
        `(B, R)`; `exclude` `(B,)` leaves out one datastore row per image
        (default: none).
        """
        patches = self.encode_image(images)
        if self.retrieval is None:
            return patches, None, None
        if exclude is None:
            exclude = ops.full((ops.shape(images)[0],), -1, dtype="int32")
        ids, similarity = self.retrieval(images, exclude)
        memory, mask = self.memory(patches, self.token_embedding(ids), ids, similarity)
        for block in self.fusion_blocks:
            memory = block(memory, padding_mask=mask, training=False)
        word_ids = ops.reshape(ids, (ops.shape(ids)[0], -1))
        return self.fusion_norm(memory), mask, word_ids

    def neighbour_ids(self, images):
        """Retrieved caption ids `(B, K, L)` and similarities `(B, K)`."""
        exclude = ops.full((ops.shape(images)[0],), -1, dtype="int32")
        return self.retrieval(images, exclude)

    def _embed(self, tokens, start_index=0):
        x = self.token_embedding(tokens)  # (B, T, D)
        return x + self.position_embedding(x, start_index=start_index)

    def _output(self, x, context, tokens):
        """Final norm and head: `(B, T, D)` states of input `tokens` `(B, T)`
        -> float32 `(B, T, V)` logits."""
        x = self.norm(x)
        logits = self.head(x)
        if self.copy is not None:
            memory, mask, word_ids = context
            logits = self.copy(x, memory, mask, word_ids, logits, tokens)
        return ops.cast(logits, "float32")

    def decode_step(self, tokens, context, caches, index):
        """One new token per row at position `index`: `(B, 1)` -> logits `(B, V)`.

        `context` is the result of `encode` (repeated per beam)."""
        memory, mask, _ = context
        x = self._embed(tokens, index)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, memory, encoder_padding_mask=mask,
                             self_attention_cache=cache, self_attention_cache_index=index)
            new_caches.append(cache)
        return self._output(x, context, tokens)[:, 0], new_caches

    def teacher_forced(self, tokens, context):
        """Logits `(B, T, V)` and per-block cross-attention `(B, N, T, M)` for `tokens`."""
        memory, mask, _ = context
        x = self._embed(tokens)
        cross = []
        for block in self.blocks:
            x, _, scores = block(x, memory, encoder_padding_mask=mask,
                                 return_attention_scores=True)
            cross.append(scores)
        return self._output(x, context, tokens), cross

    def init_caches(self, batch_size, max_length):
        return [block.init_cache(batch_size, max_length) for block in self.blocks]


def banned_tokens(vocab):
    """`(V,)` bool, True on the ids decoding never generates: `[PAD]`, `[START]`, `[UNK]`."""
    return ops.convert_to_tensor(
        [i in (Vocabulary.pad_id, Vocabulary.start_id, Vocabulary.unk_id) for i in range(vocab)]
    )


def next_word_log_probs(vocab, block_repeats=True, endings=None):
    """The rules every decoder applies before choosing the next token.

    `[PAD]`, `[START]` and `[UNK]` are never generated (`banned_tokens`); with
    `block_repeats` neither is each row's previous word (no training caption
    repeats a word twice in a row); with `endings` (`Vocabulary.endings`)
    `[END]` follows only a word that ends a training caption, and ends a
    one-word caption only after a one-word training caption. Banned ids are
    removed before the softmax, so the rest is renormalised.

    Args:
        vocab: V.
        block_repeats: ban the previous word.
        endings: `(2, V)` bool, or None for no ending rule.

    Returns:
        `log_probs(logits, previous, index)`: `(B, V)` float32 logits, `(B, 1)`
        int32 tokens at decoder position `index` (0 is `[START]`, 1 the first
        word) -> `(B, V)` float32 log-probabilities.
    """
    banned = banned_tokens(vocab)[None]  # (1, V)
    word_ids = ops.arange(vocab, dtype="int32")[None]  # (1, V)
    is_end = ops.equal(word_ids, Vocabulary.end_id)  # (1, V)
    if endings is not None:
        endings = ops.convert_to_tensor(endings)

    def log_probs(logits, previous, index):
        ban = ops.logical_or(banned, ops.equal(word_ids, previous)) if block_repeats \
            else banned
        if endings is not None:
            may_end = ops.take(endings[0], previous[:, 0], axis=0)  # (B,)
            alone = ops.take(endings[1], previous[:, 0], axis=0)
            allowed = ops.logical_and(may_end, ops.logical_or(ops.not_equal(index, 1), alone))
            ban = ops.logical_or(ban, ops.logical_and(ops.logical_not(allowed)[:, None],
                                                      is_end))
        return ops.log_softmax(ops.where(ban, _NEG, logits), axis=-1)

    return log_probs


def _start_buffer(rows, max_length):
    start = ops.full((rows, 1), Vocabulary.start_id, dtype="int32")
    return ops.concatenate([start, ops.zeros((rows, max_length), dtype="int32")], axis=1)


def _write_column(tokens, index, column):
    """`tokens[:, index] = column` with a traced `index`."""
    length = ops.shape(tokens)[1]
    at = ops.expand_dims(ops.equal(ops.arange(length, dtype="int32"), index), 0)
    return ops.where(at, ops.expand_dims(column, 1), tokens)


def beam_search(parts, images, beam_width=4, length_penalty=0.6, max_length=None,
                block_repeats=True, endings=None):
    """Captions of `images` by beam search with the self-attention cache.

    Beams are ranked by total log-probability while searching; at the end the
    beams are compared by `log_prob / ((5 + length) / 6) ** length_penalty`
    (Wu et al. 2016). `beam_width=1` is greedy decoding. A finished beam
    continues with `[PAD]` at no cost. Each step applies the rules of
    `next_word_log_probs`: `[PAD]`, `[START]` and `[UNK]` are never generated;
    with `block_repeats` neither is the word just generated (without the rule
    the model sometimes stutters, "scoop scoop"); with `endings` captions do
    not stop at "a" or "the".

    Args:
        parts: `DecoderParts` of the backbone.
        images: `(B, S, S, 3)` float in [0, 1].
        beam_width: K.
        length_penalty: the exponent alpha above.
        max_length: decoding steps, at most the decoder positions L.
        block_repeats: never generate the previous word again at once.
        endings: `(2, V)` bool from `Vocabulary.endings`, or None for no rule.

    Returns:
        `(B, max_length)` int32 ids after `[START]`: words, `[END]`, then `[PAD]`.
    """
    k = int(beam_width)
    max_length = int(max_length or parts.max_length)
    batch_size = ops.shape(images)[0]
    # (B*K, M, D) memory, then (B*K, M) mask and (B*K, R) word ids or None.
    context = tuple(None if c is None else ops.repeat(c, k, axis=0)
                    for c in parts.encode(images))
    caches = tuple(parts.init_caches(batch_size * k, max_length))
    tokens = _start_buffer(batch_size * k, max_length)  # (B*K, L + 1)
    first = ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), _NEG)])  # (K,)
    scores = ops.tile(first[None, :], [batch_size, 1])  # (B, K)
    finished = ops.zeros((batch_size, k), dtype="bool")
    vocab = parts.head.units
    next_log_probs = next_word_log_probs(vocab, block_repeats, endings)
    pad_only = ops.where(ops.arange(vocab) == Vocabulary.pad_id, 0.0, _NEG)  # (V,)

    def cond(i, tokens, caches, scores, finished):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    def body(i, tokens, caches, scores, finished):
        current = ops.slice(tokens, [0, i], [batch_size * k, 1])  # (B*K, 1)
        logits, caches = parts.decode_step(current, context, list(caches), i)
        log_probs = next_log_probs(logits, current, i)  # (B*K, V)
        log_probs = ops.reshape(log_probs, (batch_size, k, vocab))
        log_probs = ops.where(finished[..., None], pad_only, log_probs)
        candidates = ops.reshape(scores[..., None] + log_probs, (batch_size, k * vocab))
        scores, flat = ops.top_k(candidates, k)  # (B, K)
        beam = flat // vocab
        next_ids = ops.cast(flat % vocab, "int32")  # (B, K)
        rows = ops.reshape(ops.arange(batch_size)[:, None] * k + beam, (-1,))  # (B*K,)
        tokens = ops.take(tokens, rows, axis=0)
        caches = tuple(ops.take(c, rows, axis=0) for c in caches)
        finished = ops.take_along_axis(finished, beam, axis=1)
        finished = ops.logical_or(finished, ops.equal(next_ids, Vocabulary.end_id))
        tokens = _write_column(tokens, i + 1, ops.reshape(next_ids, (-1,)))
        return i + 1, tokens, caches, scores, finished

    _, tokens, _, scores, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, caches, scores, finished),
        maximum_iterations=max_length,
    )
    tokens = ops.reshape(tokens[:, 1:], (batch_size, k, max_length))
    lengths = ops.sum(ops.cast(ops.not_equal(tokens, Vocabulary.pad_id), "float32"), axis=-1)
    normalised = scores / ops.power((5.0 + lengths) / 6.0, length_penalty)  # (B, K)
    best = ops.argmax(normalised, axis=1)  # (B,)
    return ops.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
