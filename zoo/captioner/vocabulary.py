"""Word-level caption vocabulary."""

import collections
import json

import numpy as np

from zoo.captioner.data import caption_words

PAD, UNK, START, END = "[PAD]", "[UNK]", "[START]", "[END]"
SPECIAL_TOKENS = (PAD, UNK, START, END)


class Vocabulary:
    """Maps caption words to ids and back.

    Ids 0-3 are `[PAD]`, `[UNK]`, `[START]` and `[END]`; words follow, most
    frequent first (ties alphabetical). Captions are split with
    `zoo.captioner.data.caption_words` (lower case, letters and digits), so
    decoding gives lower-case words joined by spaces. The exported SavedModel
    maps ids back to words with the same table (`tf.gather` on a constant).

    `build` also records how the training captions end: the words that end
    captions (`final_words`; with `min_end_share`, only those that end at
    least that share of their uses) and the words that are a whole caption
    on their own (`single_words`). Decoding uses them (`endings`) to end a
    caption only where a training caption could end: never after "the" or
    "of", and never with a lone word such as "a" that no training caption
    consists of.

    Args:
        words: the words after the special tokens, in id order.
        final_words: words that end a training caption (None: not recorded,
            no rule).
        single_words: words that form a one-word training caption (None: not
            recorded).

    Example:

    >>> vocab = Vocabulary.build(["A red car.", "A red hat."], min_count=2)
    >>> vocab.words
    ['[PAD]', '[UNK]', '[START]', '[END]', 'a', 'red']
    >>> vocab.encode("A red bus.", max_length=6)
    array([2, 4, 5, 1, 3, 0], dtype=int32)
    """

    def __init__(self, words, final_words=None, single_words=None):
        words = list(words)
        if any(not isinstance(w, str) or not w or w in SPECIAL_TOKENS for w in words):
            raise ValueError(
                "`words` must be non-empty strings other than the special tokens "
                f"{SPECIAL_TOKENS}. Received: words={words[:10]!r}..."
            )
        if len(set(words)) != len(words):
            raise ValueError("`words` must not repeat a word. Received: duplicates in words")
        self.words = [*SPECIAL_TOKENS, *words]
        self._ids = {w: i for i, w in enumerate(self.words)}
        if (final_words is None) != (single_words is None):
            raise ValueError("Give both `final_words` and `single_words`, or neither. "
                             f"Received: final_words={final_words is not None}, "
                             f"single_words={single_words is not None}")
        for name, group in (("final_words", final_words), ("single_words", single_words)):
            unknown = [w for w in group or () if w not in self._ids or w in SPECIAL_TOKENS]
            if unknown:
                raise ValueError(f"`{name}` must be words of the vocabulary. "
                                 f"Received: {unknown[:5]!r}")
        self.final_words = None if final_words is None else sorted(set(final_words))
        self.single_words = None if single_words is None else sorted(set(single_words))

    pad_id, unk_id, start_id, end_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions, min_count=2, max_size=None, min_end_share=0.0):
        """A vocabulary of the words seen at least `min_count` times in `captions`.

        A word is final when it ends at least one caption and at least
        `min_end_share` of its uses (so with 0.02, "a", which ends 3 of its 645
        uses in the training captions, is not)."""
        if isinstance(min_end_share, bool) or not isinstance(min_end_share, (int, float)) \
                or not 0.0 <= min_end_share <= 1.0:
            raise ValueError("`min_end_share` must be a number in [0, 1]. "
                             f"Received: min_end_share={min_end_share!r}")
        split = [caption_words(c) for c in captions]
        counts = collections.Counter(w for words in split for w in words)
        ends = collections.Counter(w[-1] for w in split if w)
        ranked = sorted((w for w, n in counts.items() if n >= min_count),
                        key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIAL_TOKENS))]
        kept = set(ranked)
        final = {w for w, n in ends.items() if w in kept and n >= min_end_share * counts[w]}
        single = {w[0] for w in split if len(w) == 1 and w[0] in kept}
        return cls(ranked, final, single)

    def endings(self):
        """`(2, V)` bool, or None when the endings were not recorded.

        Row 0: `[END]` may follow this id (a final word; also `[END]` and
        `[PAD]`, which only finished captions hold; not `[START]`: no caption
        is empty). Row 1: `[END]` may follow this id as the first word (a
        one-word caption)."""
        if self.final_words is None:
            return None
        out = np.zeros((2, len(self.words)), dtype=bool)
        out[0, [self._ids[w] for w in self.final_words]] = True
        out[0, [self.pad_id, self.end_id]] = True
        out[1, [self._ids[w] for w in self.single_words]] = True
        out[1, [self.pad_id, self.end_id]] = True
        return out

    def __len__(self):
        return len(self.words)

    def encode(self, caption, max_length):
        """`[START] w1 ... wn [END]` padded with `[PAD]` (0) to `max_length` ids.

        Words past `max_length - 2` are cut (the `[END]` is always kept).
        """
        words = caption_words(caption)[: max_length - 2]
        ids = [self.start_id, *(self._ids.get(w, self.unk_id) for w in words), self.end_id]
        out = np.zeros((max_length,), dtype="int32")
        out[: len(ids)] = ids
        return out

    def decode(self, ids):
        """The words of `ids` up to the first `[END]`, skipping special tokens."""
        words = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.end_id:
                break
            if i >= len(SPECIAL_TOKENS) and i < len(self.words):
                words.append(self.words[i])
        return " ".join(words)

    def to_json(self):
        payload = {"words": self.words[len(SPECIAL_TOKENS):]}
        if self.final_words is not None:
            payload.update(final_words=self.final_words, single_words=self.single_words)
        return json.dumps(payload, indent=0)

    @classmethod
    def from_json(cls, text):
        payload = json.loads(text)
        if not isinstance(payload, dict) or not isinstance(payload.get("words"), list):
            raise ValueError("A vocabulary file must hold {\"words\": [...]}. "  # noqa: TRY004
                             f"Received: {str(text)[:80]!r}")
        return cls(payload["words"], payload.get("final_words"), payload.get("single_words"))
