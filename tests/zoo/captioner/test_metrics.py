import math

import pytest

from zoo.captioner.metrics import bleu4, cider_d, evaluate_captions

L2 = math.log(2.0)


def test_cider_d_hand_computed_exact_and_disjoint():
    # Two images, |I| = 2. "a" is in both images' references: idf 0.
    # Image 1: "a cat" vs "a cat": n=1 cosine over {cat}: 1; n=2 {"a cat"}: 1;
    # n=3,4 empty: 0. CIDEr-D = 10 * (1 + 1) / 4 = 5.
    # Image 2: "a cat" vs "a dog": no shared n-gram with a non-zero idf: 0.
    score, per_image = cider_d(["a cat", "a cat"], [["a cat"], ["a dog"]])
    assert per_image == pytest.approx([5.0, 0.0])
    assert score == pytest.approx(2.5)


def test_cider_d_clips_repeated_words():
    # "cat cat" vs "a cat": n=1 candidate {cat: 2 L2}, reference {a: 0, cat: L2};
    # min(2 L2, L2) * L2 / (|2 L2| * |L2|) = 0.5; n=2 no match; same length.
    _, per_image = cider_d(["cat cat", "a dog"], [["a cat"], ["a dog"]])
    assert per_image[0] == pytest.approx(10 * 0.5 / 4)


def test_cider_d_length_penalty():
    # "a cat sat" vs "a cat": n=1 {a: 0, cat: L2, sat: L2} . {a: 0, cat: L2} -> 1/sqrt(2);
    # n=2 {"a cat", "cat sat"} . {"a cat"} -> 1/sqrt(2); n=3: reference has none -> 0.
    # Length 3 vs 2: exp(-1 / (2 * 36)).
    _, per_image = cider_d(["a cat sat", "a dog"], [["a cat"], ["a dog"]])
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(2)) / 4
    assert per_image[0] == pytest.approx(expected)
    assert per_image[1] == pytest.approx(5.0)


def test_cider_d_averages_over_references_and_normalises_text():
    # |I| = 2; "a" occurs in both images' references (idf 0), every other n-gram
    # in one (idf L2). Image 1: "a red cat" equals its first reference after
    # normalisation, so n = 1, 2, 3 give cosine 1 and n = 4 gives 0: 10 * 3 / 4;
    # against "A dog" it shares only "a": 0. Mean over the two references: 3.75.
    refs = [["A red cat.", "A dog"], ["a blue hat"]]
    _, per_image = cider_d(["a red cat", "a blue hat"], refs)
    assert per_image[0] == pytest.approx(10 * 3 / 4 / 2)
    assert per_image[1] == pytest.approx(10 * 3 / 4)


def test_cider_d_empty_candidate_scores_zero():
    _, per_image = cider_d(["", "a dog"], [["a cat"], ["a dog"]])
    assert per_image[0] == 0.0


def test_cider_d_errors():
    with pytest.raises(ValueError, match="len\\(candidates\\)=1, len\\(references\\)=2"):
        cider_d(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="references\\[0\\]=\\[\\]"):
        cider_d(["a"], [[]])
    with pytest.raises(TypeError, match="candidates\\[0\\]=3"):
        cider_d([3], [["a"]])
    with pytest.raises(ValueError, match="must not be empty"):
        cider_d([], [])


def test_bleu4_perfect_and_variable_references():
    refs = [["A red cat sits on the mat.", "A cat."], ["The blue dog runs in the park."]]
    assert bleu4(["a red cat sits on the mat", "the blue dog runs in the park"], refs) == \
        pytest.approx(100.0)
    assert bleu4(["zebra zebra zebra zebra", "zebra zebra zebra zebra"], refs) == 0.0


def test_evaluate_captions_keys():
    result = evaluate_captions(["a cat"], [["a cat"]])
    assert set(result) == {"cider_d", "bleu4"}


def test_cider_reward_with_end_word_hand_computed():
    from zoo.captioner.metrics import CiderD

    refs = [["a red cat"], ["a dog"]]
    penalty = math.exp(-1 / 72)  # 2 words against 3 (3 against 4 with the end word)
    # Plain: "a red" vs "a red cat": n=1 {a: 0, red: L2} . {a: 0, red: L2, cat: L2}
    # -> 1/sqrt(2); n=2 {"a red"} . {"a red", "red cat"} -> 1/sqrt(2); n=3,4: 0.
    plain = CiderD(refs).scores(["a red", "a red cat"], [refs[0], refs[0]])
    assert plain[0] == pytest.approx(10 * penalty * (2 / math.sqrt(2)) / 4)
    assert plain[1] == pytest.approx(10 * 3 / 4)
    # With the end word "</s>" (df 2, idf 0): n=1 unchanged; n=2 {"a red",
    # "red </s>"} . {"a red", "red cat", "cat </s>"} -> 1/(sqrt(2) sqrt(3));
    # n=3 {"a red </s>"} shares nothing with {"a red cat", "red cat </s>"}.
    marked = CiderD(refs, mark_end=True).scores(["a red", "a red cat"], [refs[0], refs[0]])
    assert marked[0] == pytest.approx(
        10 * penalty * (1 / math.sqrt(2) + 1 / math.sqrt(6)) / 4)
    # The whole caption now matches at n = 1..4 ("a red cat </s>").
    assert marked[1] == pytest.approx(10.0)
    # An empty caption is still worth nothing.
    assert CiderD(refs, mark_end=True).scores([""], [refs[0]]) == [0.0]
