"""Caption metrics: CIDEr-D (Vedantam et al. 2015) and BLEU-4 (sacreBLEU).

Both compare captions after `zoo.captioner.data.caption_words` (lower case,
letters and digits, punctuation dropped), applied to candidates and references
alike.

CIDEr-D, as defined in "CIDEr: Consensus-based Image Description Evaluation"
(Vedantam, Zitnick and Parikh, CVPR 2015), section 3 and its CIDEr-D variant:

- For n = 1..4, a caption becomes a vector over n-grams: the count of the
  n-gram in the caption times its inverse document frequency
  `log(|I|) - log(max(1, df))`, where `|I|` is the number of evaluated images
  and `df` the number of images among whose references the n-gram occurs.
  (The paper divides counts by the caption's n-gram total; the cosine below
  does not change, and the clip compares counts.)
- `CIDEr-D_n(c, S) = 10 / m * sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2)) *
  (min(g(c), g(s_j)) . g(s_j)) / (|g(c)| |g(s_j)|)` over the `m` references
  `s_j` of the image, with `l` the length in words, `sigma = 6`, and the
  candidate's vector clipped to the reference's (element-wise min) in the dot
  product only. A zero vector gives 0.
- `CIDEr-D = mean over n of CIDEr-D_n`; the corpus score is the mean over
  images. No stemming.

`CiderD(..., mark_end=True)` is a training reward, not the metric: every
caption gets a final end-of-caption word before its n-grams are counted, so a
caption that stops after "a" or "the" holds n-grams ("a </s>") that no
reference has, and one that ends on the right word gains a matching one. A
reward without it pays a caption that stops early for the words it got right
and charges it nothing for the ones it left out; self-critical training on it
learns to stop when unsure ("a", "the letter"). This is the "bad endings" fix
of Luo 2020, "A Better Variant of Self-Critical Sequence Training".
"""

import collections
import math

from zoo.captioner.data import caption_words


END_WORD = "</s>"  # caption_words never yields it: it drops punctuation


def _ngrams(words, n):
    return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _check(candidates, references):
    candidates = list(candidates)
    references = [list(r) for r in references]
    if len(candidates) != len(references):
        raise ValueError(
            "`candidates` and `references` must have one entry per image. Received: "
            f"len(candidates)={len(candidates)}, len(references)={len(references)}"
        )
    for i, refs in enumerate(references):
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(
                "Each image needs at least one reference caption (a string). "
                f"Received: references[{i}]={refs!r}"
            )
    for i, c in enumerate(candidates):
        if not isinstance(c, str):
            raise TypeError(f"Candidates must be strings. Received: candidates[{i}]={c!r}")
    return candidates, references


def cider_d(candidates, references, sigma=6.0, max_n=4):
    """CIDEr-D of candidate captions against their references.

    Args:
        candidates: one caption (str) per image.
        references: per image, a list of one or more reference captions.
        sigma: width of the Gaussian length penalty.
        max_n: longest n-gram.

    Returns:
        `(corpus_score, per_image_scores)`: the mean and the list of scores.

    Example:

    >>> score, _ = cider_d(["a cat", "a cat"], [["a cat"], ["a dog"]])
    >>> round(score, 4)
    2.5
    """
    candidates, references = _check(candidates, references)
    if not candidates:
        raise ValueError("`candidates` must not be empty. Received: 0 images")
    scores = CiderD(references, sigma, max_n).scores(candidates, references)
    return sum(scores) / len(scores), scores


class CiderD:
    """CIDEr-D with the document frequencies of a fixed corpus of reference sets.

    `cider_d` takes the frequencies from the references it scores; this class
    fixes them once (e.g. on all training captions) and scores any number of
    candidates against their own references with them, as a reward while
    training on the metric.

    Args:
        document_references: per image, a list of reference captions; the
            n-gram document frequencies and `|I|` come from these.
        sigma: width of the Gaussian length penalty.
        max_n: longest n-gram.
        mark_end: end every caption with `END_WORD` (see the module doc); for
            rewards only: reported CIDEr-D never uses it.

    Example:

    >>> scorer = CiderD([["a cat"], ["a dog"]])
    >>> [round(x, 4) for x in scorer.scores(["a cat", "a cat"], [["a cat"], ["a dog"]])]
    [5.0, 0.0]
    """

    def __init__(self, document_references, sigma=6.0, max_n=4, mark_end=False):
        document_references = [list(r) for r in document_references]
        if not document_references:
            raise ValueError("`document_references` must not be empty. Received: 0 images")
        self.sigma = float(sigma)
        self.max_n = int(max_n)
        self.mark_end = bool(mark_end)
        self.log_images = math.log(float(len(document_references)))
        self.df = [collections.Counter() for _ in range(self.max_n)]
        for refs in document_references:
            words = [self._words(r) for r in refs]
            for n in range(self.max_n):
                seen = set()
                for w in words:
                    seen.update(_ngrams(w, n + 1))
                self.df[n].update(seen)

    def _words(self, caption):
        words = caption_words(caption)
        return words + [END_WORD] if self.mark_end else words

    def _vectors(self, words):
        out = []
        for n in range(self.max_n):
            counts = _ngrams(words, n + 1)
            vec = {g: c * (self.log_images - math.log(max(1.0, self.df[n][g])))
                   for g, c in counts.items()}
            out.append((vec, math.sqrt(sum(v * v for v in vec.values()))))
        return out

    def scores(self, candidates, references):
        """Per-image CIDEr-D of `candidates` (str) against `references` (lists of str)."""
        candidates, references = _check(candidates, references)
        scores = []
        for candidate, refs in zip(candidates, references):
            words = self._words(candidate)
            cand_vecs = self._vectors(words)
            total = 0.0
            for ref in refs:
                ref_words = self._words(ref)
                penalty = math.exp(-((len(words) - len(ref_words)) ** 2)
                                   / (2.0 * self.sigma ** 2))
                for (cv, cn), (rv, rn) in zip(cand_vecs, self._vectors(ref_words)):
                    if cn == 0.0 or rn == 0.0:
                        continue
                    dot = sum(min(value, rv[g]) * rv[g] for g, value in cv.items() if g in rv)
                    total += penalty * dot / (cn * rn)
            scores.append(10.0 * total / (self.max_n * len(refs)))
        return scores


def bleu4(candidates, references):
    """Corpus BLEU-4 (sacreBLEU, 0-100) on `caption_words`-normalised text.

    Images may have different numbers of references.
    """
    import sacrebleu

    candidates, references = _check(candidates, references)
    streams = max(len(r) for r in references)
    norm = [" ".join(caption_words(c)) for c in candidates]
    ref_streams = [
        [" ".join(caption_words(refs[k])) if k < len(refs) else None for refs in references]
        for k in range(streams)
    ]
    return sacrebleu.corpus_bleu(norm, ref_streams, tokenize="none").score


def evaluate_captions(candidates, references):
    """`{"cider_d": ..., "bleu4": ...}` of candidates against references."""
    return {"cider_d": cider_d(candidates, references)[0],
            "bleu4": bleu4(candidates, references)}
