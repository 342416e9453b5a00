"""A tiny hand-set language model for the sampler tests: a second-order Markov
chain over 5 tokens whose `next` reads the older token from its cache, so a
sampler that does not reorder the cache with its beams gets different results.

Tokens: 0 pad, 1 start, 2 end, 3 "a", 4 "b".
"""

import itertools

import numpy as np
from keras import ops

PAD, START, END, A, B = 0, 1, 2, 3, 4
VOCAB = 5
WORDS = (END, A, B)


def random_table(seed=0):
    """`(V, V, V)` float32 logits `table[older, previous]`; pad and start are never
    likely (-inf would make every row of the reference end with NaN scores)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 1.5, size=(VOCAB, VOCAB, VOCAB)).astype("float32")
    table[..., PAD] = -30.0
    table[..., START] = -30.0
    return table


def make_next(table):
    """keras-hub's `next(prompt, cache, index)` for `table`; the cache is `(R, T)`,
    the tokens seen so far, written one position per call."""
    table = ops.convert_to_tensor(table)

    def next(prompt, cache, index):
        previous = ops.take(prompt, index - 1, axis=1)  # (R,)
        cache = ops.slice_update(cache, [0, index - 1], previous[:, None])
        older = ops.take(cache, ops.maximum(index - 2, 0), axis=1)
        older = ops.where(index >= 2, older, START)
        flat = ops.cast(older * VOCAB + previous, "int32")
        logits = ops.take(ops.reshape(table, (VOCAB * VOCAB, VOCAB)), flat, axis=0)
        return logits, None, cache

    return next


def start_prompt(batch, length):
    """`(batch, length)` int32 buffer: start then padding, and its cache."""
    prompt = np.zeros((batch, length), "int32")
    prompt[:, 0] = START
    return prompt, np.zeros((batch, length), "int32")


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def all_results(table, length, stop=True):
    """Every `(tokens, log_prob, n)` a search from [start] can give in a buffer of
    `length`: ended by `END`, or unfinished at the end of the buffer."""
    log_probs = log_softmax(table.astype("float64"))
    out = []
    for n in range(1, length):
        for words in itertools.product(WORDS, repeat=n):
            if stop and END in words[:-1]:
                continue
            if stop and n < length - 1 and words[-1] != END:
                continue
            seq = (START,) + words
            lp = 0.0
            for i in range(1, len(seq)):
                older = seq[i - 2] if i >= 2 else START
                lp += log_probs[older, seq[i - 1], seq[i]]
            out.append((words, lp, n))
    return out


def ranked(table, length, num, length_penalty=0.0, length_offset=0.0):
    """The `num` best results by `log_prob / norm(n)`: `[(buffer, score)]`."""
    results = []
    for words, lp, n in all_results(table, length):
        norm = ((n + length_offset) / (1.0 + length_offset)) ** length_penalty
        buffer = (START,) + words + (PAD,) * (length - 1 - n)
        results.append((buffer, lp / norm))
    results.sort(key=lambda r: -r[1])
    return results[:num]


def greedy_path(table, length, banned=()):
    """The greedy buffer from [start] and its log-probability."""
    log_probs = log_softmax(table.astype("float64"))
    seq, total = [START], 0.0
    while len(seq) < length:
        older = seq[-2] if len(seq) >= 2 else START
        lp = log_probs[older, seq[-1]].copy()
        lp[list(banned)] = -np.inf
        lp = lp - np.log(np.exp(lp).sum())
        token = int(np.argmax(lp))
        total += lp[token]
        seq.append(token)
        if token == END:
            break
    return tuple(seq) + (PAD,) * (length - len(seq)), total
