"""A shared English/Spanish WordPiece tokenizer that also runs in core TensorFlow.

Pre-tokenisation splits on whitespace and keeps every character that is not a letter
or digit (punctuation, `¿`, `¡`, apostrophes) as its own word; case and accents are
kept. The vocabulary is trained with keras-hub's `compute_word_piece_vocabulary` on
the training split. Two implementations of the greedy longest-match-first WordPiece
split give the same ids:

- `tokenize`: keras-hub's `WordPieceTokenizer` (fast, used for training and in Python);
- `tokenize_core`: core TensorFlow ops only (string joins, a hash table and an unrolled
  greedy loop), used inside exported SavedModels, which must load with `tensorflow`
  alone (the tensorflow-text ops behind keras-hub are not part of core TensorFlow).
"""

import tensorflow as tf

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
RESERVED = [PAD, UNK, BOS, EOS]
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SUFFIX = "##"
# Words longer than this many characters become [UNK] in `tokenize_core`.
MAX_WORD_CHARS = 32

_PUNCT = r"([^\p{L}\p{N}\s])"
_NO_SPACE_BEFORE = r" ([.,!?;:%)\]}»])"
_NO_SPACE_AFTER = r"([¿¡(\[{«]) "


def pretokenize(text):
    """`(B,)` strings -> `(B, None)` ragged words (core TensorFlow)."""
    text = tf.strings.regex_replace(text, _PUNCT, r" \1 ")
    return tf.strings.split(text)


def train_vocabulary(sentences, vocabulary_size):
    """Trains a WordPiece vocabulary (reserved tokens first) on `sentences`."""
    import keras_hub

    words = pretokenize(tf.constant(sentences))
    dataset = tf.data.Dataset.from_tensor_slices(words).batch(1024)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset,
        vocabulary_size,
        split=False,
        lowercase=False,
        strip_accents=False,
        suffix_indicator=SUFFIX,
        reserved_tokens=RESERVED,
    )
    return list(vocabulary)


class SubwordTokenizer:
    """WordPiece tokenizer over a fixed vocabulary; ids 0-3 are PAD, UNK, BOS, EOS.

    Args:
        vocabulary: list of tokens, starting with `RESERVED`.
    """

    def __init__(self, vocabulary):
        vocabulary = list(vocabulary)
        if vocabulary[: len(RESERVED)] != RESERVED:
            raise ValueError(
                f"The vocabulary must start with {RESERVED}. "
                f"Received: vocabulary[:4]={vocabulary[:4]}"
            )
        self.vocabulary = vocabulary
        self._keras_hub_tokenizer = None
        self._id_table = None
        self._token_table = None

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def _tables(self):
        if self._id_table is None:
            keys = tf.constant(self.vocabulary)
            ids = tf.range(len(self.vocabulary), dtype=tf.int64)
            self._id_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, ids), default_value=-1
            )
            self._token_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(ids, keys), default_value=UNK
            )
        return self._id_table, self._token_table

    def tokenize(self, text):
        """`(B,)` strings -> `(B, None)` ragged int32 ids (keras-hub WordPiece)."""
        if self._keras_hub_tokenizer is None:
            import keras_hub

            self._keras_hub_tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=self.vocabulary,
                split=False,
                lowercase=False,
                strip_accents=False,
                suffix_indicator=SUFFIX,
                oov_token=UNK,
                dtype="int32",
            )
            self._tokenize_fn = tf.function(self._tokenize_graph)
        return self._tokenize_fn(tf.convert_to_tensor(text))

    def _tokenize_graph(self, text):
        words = pretokenize(text)  # (B, W)
        # keras-hub merges the word axis itself when given pre-split words.
        return self._keras_hub_tokenizer(words)  # (B, P)

    def tokenize_core(self, text):
        """`(B,)` strings -> `(B, None)` ragged int32 ids, core TensorFlow only."""
        id_table, _ = self._tables()
        words = pretokenize(tf.convert_to_tensor(text))  # (B, W)
        flat = words.flat_values  # (N,)
        pieces = _greedy_word_piece(flat, id_table)  # (N, None)
        per_sentence = tf.RaggedTensor.from_row_splits(pieces, words.row_splits)
        return per_sentence.merge_dims(1, 2)

    def detokenize(self, ids):
        """`(B, T)` int ids (dense or ragged) -> `(B,)` strings, core TensorFlow only.

        Decoding stops at the first EOS; PAD, BOS and EOS are dropped.
        """
        _, token_table = self._tables()
        ids = tf.cast(ids, tf.int64)
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=PAD_ID)
        # Keep tokens before the first EOS, and drop the other special ids.
        after_eos = tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1) > 0
        keep = tf.logical_and(tf.logical_not(after_eos), ids > EOS_ID)
        tokens = tf.ragged.boolean_mask(token_table.lookup(ids), keep)
        text = tf.strings.reduce_join(tokens, axis=1, separator=" ")
        text = tf.strings.regex_replace(text, "(^| )" + SUFFIX, "")  # join suffix pieces
        text = tf.strings.regex_replace(text, _NO_SPACE_BEFORE, r"\1")
        text = tf.strings.regex_replace(text, _NO_SPACE_AFTER, r"\1")
        text = tf.strings.regex_replace(text, r" ' ", "'")
        return text


def _greedy_word_piece(words, id_table):
    """Greedy longest-match-first WordPiece of `(N,)` words -> `(N, None)` ids."""
    c = MAX_WORD_CHARS
    chars = tf.strings.unicode_split(words, "UTF-8")  # (N, L)
    lengths = tf.cast(chars.row_lengths(), tf.int32)  # (N,)
    n = tf.shape(words)[0]
    dense = chars.to_tensor(default_value="", shape=[None, c])  # (N, C)
    # ids[:, i, j]: id of the piece chars[i:j+1] ("##"-prefixed when i > 0), or -1.
    rows = []
    for i in range(c):
        piece = tf.fill([n], SUFFIX) if i > 0 else tf.fill([n], "")
        row = []
        for j in range(c):
            if j < i:
                row.append(tf.fill([n], tf.constant(-1, tf.int64)))
                continue
            piece = tf.strings.join([piece, dense[:, j]])
            row.append(id_table.lookup(piece))
        rows.append(tf.stack(row, axis=1))
    ids = tf.stack(rows, axis=1)  # (N, C, C)
    ends = tf.range(1, c + 1)  # (C,) end position j + 1
    valid_end = ends[None, :] <= lengths[:, None]  # (N, C)

    start = tf.zeros([n], tf.int32)
    failed = lengths > c
    out = []
    for _ in range(c):
        active = tf.logical_and(start < lengths, tf.logical_not(failed))
        row = tf.gather(ids, tf.minimum(start, c - 1), axis=1, batch_dims=1)  # (N, C)
        ok = tf.logical_and(row >= 0, valid_end)
        best_end = tf.reduce_max(tf.where(ok, ends[None, :], 0), axis=1)  # (N,)
        found = best_end > 0
        piece = tf.gather(row, tf.maximum(best_end - 1, 0), axis=1, batch_dims=1)
        failed = tf.logical_or(failed, tf.logical_and(active, tf.logical_not(found)))
        emit = tf.logical_and(active, found)
        out.append(tf.where(emit, piece, -1))
        start = tf.where(emit, best_end, start)
    pieces = tf.stack(out, axis=1)  # (N, C), emitted ids first, then -1
    pieces = tf.where(failed[:, None], tf.constant(-1, tf.int64), pieces)
    unk_column = tf.where(failed, tf.constant(UNK_ID, tf.int64), -1)[:, None]
    pieces = tf.concat([unk_column, pieces], axis=1)
    pieces = tf.RaggedTensor.from_tensor(pieces, padding=-1)
    # Leading -1 (words that did not fail) must go too: keep ids >= 0 only.
    pieces = tf.ragged.boolean_mask(pieces, pieces >= 0)
    return tf.cast(pieces, tf.int32)
