"""Greedy and beam-search decoding with the decoder's key/value cache.

Written with `keras.ops` (including `keras.ops.while_loop`), so the same functions run
eagerly, inside a `tf.function` (and so inside an exported SavedModel) or under JAX.
Shape legend: B batch, K beam size, S source length, V vocabulary.
"""

from keras import ops

from zoo.translator.tokenizer import BOS_ID, EOS_ID, PAD_ID

_NEG = -1e9


def _write_column(tokens, index, column):
    """`tokens[:, index] = column` for a `(B, T)` buffer and `(B,)` column."""
    return ops.slice_update(tokens, [0, index], ops.expand_dims(column, 1))


def _start_buffer(batch_size, max_length):
    """`(B, max_length + 1)` int32 buffer: BOS then padding."""
    bos = ops.full((batch_size, 1), BOS_ID, dtype="int32")
    pad = ops.zeros((batch_size, max_length), dtype="int32")
    return ops.concatenate([bos, pad], axis=1)


def greedy_decode(model, encoder_tokens, max_length):
    """Greedy decoding of a `TransformerSeq2Seq` with its KV cache.

    Returns:
        `(B, max_length)` int32 ids after BOS; EOS then PAD after the end.
    """
    batch_size = ops.shape(encoder_tokens)[0]
    memory, memory_mask = model.encode(encoder_tokens)
    caches = tuple(model.init_caches(batch_size, max_length))
    tokens = _start_buffer(batch_size, max_length)
    finished = ops.zeros((batch_size,), dtype="bool")

    def cond(i, tokens, caches, finished):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    def body(i, tokens, caches, finished):
        current = ops.slice(tokens, [0, i], [batch_size, 1])  # (B, 1)
        logits, caches = model.decode_step(current, memory, memory_mask, list(caches), i)
        next_ids = ops.cast(ops.argmax(logits[:, -1], axis=-1), "int32")  # (B,)
        next_ids = ops.where(finished, PAD_ID, next_ids)
        tokens = _write_column(tokens, i + 1, next_ids)
        finished = ops.logical_or(finished, ops.equal(next_ids, EOS_ID))
        return i + 1, tokens, tuple(caches), finished

    _, tokens, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, caches, finished)
    )
    return tokens[:, 1:]


def beam_search(model, encoder_tokens, max_length, beam_size=4, length_penalty=0.6):
    """Beam search of a `TransformerSeq2Seq` with its KV cache.

    Beams are ranked by total log-probability while searching; the finished beams
    are compared with the GNMT length normalisation `((5 + length) / 6) ** alpha`
    (Wu et al. 2016), `alpha = length_penalty`.

    Returns:
        `(B, max_length)` int32 ids of the best beam, as `greedy_decode`.
    """
    k = beam_size
    batch_size = ops.shape(encoder_tokens)[0]
    memory, memory_mask = model.encode(encoder_tokens)
    memory = ops.repeat(memory, k, axis=0)  # (B*K, S, F)
    memory_mask = ops.repeat(memory_mask, k, axis=0)  # (B*K, S)
    caches = tuple(model.init_caches(batch_size * k, max_length))
    tokens = _start_buffer(batch_size * k, max_length)
    # Only the first beam is live at the start, so the K beams do not repeat.
    first = ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), _NEG)])  # (K,)
    scores = ops.tile(first[None, :], [batch_size, 1])  # (B, K)
    finished = ops.zeros((batch_size, k), dtype="bool")

    def cond(i, tokens, caches, scores, finished):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    def body(i, tokens, caches, scores, finished):
        current = ops.slice(tokens, [0, i], [batch_size * k, 1])
        logits, caches = model.decode_step(current, memory, memory_mask, list(caches), i)
        vocab = ops.shape(logits)[-1]
        log_probs = ops.log_softmax(logits[:, -1], axis=-1)  # (B*K, V)
        log_probs = ops.reshape(log_probs, (batch_size, k, vocab))
        # A finished beam can only continue with PAD, at no cost.
        pad_only = ops.where(ops.arange(vocab) == PAD_ID, 0.0, _NEG)  # (V,)
        log_probs = ops.where(finished[..., None], pad_only, log_probs)
        candidates = ops.reshape(scores[..., None] + log_probs, (batch_size, k * vocab))
        scores, flat = ops.top_k(candidates, k)  # (B, K)
        beam = flat // vocab
        next_ids = ops.cast(flat % vocab, "int32")  # (B, K)
        rows = ops.reshape(ops.arange(batch_size)[:, None] * k + beam, (-1,))  # (B*K,)
        tokens = ops.take(tokens, rows, axis=0)
        caches = tuple(ops.take(c, rows, axis=0) for c in caches)
        finished = ops.take_along_axis(finished, beam, axis=1)
        finished = ops.logical_or(finished, ops.equal(next_ids, EOS_ID))
        tokens = _write_column(tokens, i + 1, ops.reshape(next_ids, (-1,)))
        return i + 1, tokens, caches, scores, finished

    _, tokens, _, scores, _ = ops.while_loop(
        cond, body,
        (ops.convert_to_tensor(0, "int32"), tokens, caches, scores, finished),
    )
    tokens = ops.reshape(tokens[:, 1:], (batch_size, k, max_length))
    lengths = ops.sum(ops.cast(ops.not_equal(tokens, PAD_ID), "float32"), axis=-1)
    normalised = scores / ops.power((5.0 + lengths) / 6.0, length_penalty)  # (B, K)
    best = ops.argmax(normalised, axis=1)  # (B,)
    return ops.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]


def greedy_decode_gru(model, encoder_tokens, max_length):
    """Greedy decoding of a `GRUSeq2Seq`, one GRU step at a time."""
    batch_size = ops.shape(encoder_tokens)[0]
    memory, memory_mask, state = model.encode(encoder_tokens)
    tokens = _start_buffer(batch_size, max_length)
    finished = ops.zeros((batch_size,), dtype="bool")

    def cond(i, tokens, state, finished):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    def body(i, tokens, state, finished):
        current = ops.slice(tokens, [0, i], [batch_size, 1])
        logits, state = model.decode(current, memory, memory_mask, state)
        next_ids = ops.cast(ops.argmax(logits[:, -1], axis=-1), "int32")
        next_ids = ops.where(finished, PAD_ID, next_ids)
        tokens = _write_column(tokens, i + 1, next_ids)
        finished = ops.logical_or(finished, ops.equal(next_ids, EOS_ID))
        return i + 1, tokens, state, finished

    _, tokens, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, state, finished)
    )
    return tokens[:, 1:]
