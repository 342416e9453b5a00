import json
import types

import numpy as np
import pytest
from keras import ops

from tests.zoo.captioner.helpers import (
    DATASTORE_CAPTIONS,
    assert_ends_like_training,
    biased_captioner,
    datastore_images,
    ending_captioner,
    tiny_captioner,
)
from zoo.captioner.decoding import beam_search
from zoo.captioner.metrics import CiderD, cider_d
from zoo.captioner.self_critical import (
    SelfCriticalTrainer,
    leave_one_out_advantages,
    sample_captions,
    sequence_loss,
)


def test_leave_one_out_advantages_by_hand():
    rewards = [[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]
    # Baselines: (2+3)/2, (1+3)/2, (1+2)/2 and 3, 3, 0.
    np.testing.assert_allclose(leave_one_out_advantages(rewards),
                               [[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]])
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_advantages([[1.0], [2.0]])


def test_sequence_loss_sums_the_nll_of_real_tokens():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    targets = np.array([[1, 2, 0]])  # the last target is [PAD]
    expected = -(np.log(0.25) + np.log(0.1))
    loss = ops.convert_to_numpy(sequence_loss(targets, logits.astype("float32")))
    np.testing.assert_allclose(loss, [expected], rtol=1e-5)


def test_cider_scorer_matches_cider_d_and_fixes_the_document_frequency():
    candidates = ["a red cat", "green apple", "blue pear on a box"]
    references = [["a red cat", "the cat is red"], ["an apple"], ["a blue pear"]]
    score, per_image = cider_d(candidates, references)
    np.testing.assert_allclose(CiderD(references).scores(candidates, references), per_image)
    # With the frequencies of one reference set, "cat" is in every document: its
    # weight is log(1) - log(1) = 0, so a candidate sharing only "cat" scores 0.
    assert CiderD([["cat"]]).scores(["cat cat"], [["cat"]]) == [0.0]
    with pytest.raises(ValueError, match="must not be empty"):
        CiderD([])


@pytest.mark.parametrize("retrieval, successors", [(0, False), (2, False), (2, True)])
def test_constant_noise_sampling_is_greedy_decoding(retrieval, successors):
    captioner = tiny_captioner(retrieval_neighbours=retrieval, copy_successors=successors)
    images = ops.convert_to_tensor(datastore_images()[:3].astype("float32") / 255.0)
    length, vocab = captioner.parts.max_length, captioner.parts.head.units
    noise = ops.full((length, 3, vocab), 0.5)
    exclude = ops.full((3,), -1, dtype="int32")
    sampled = ops.convert_to_numpy(sample_captions(captioner.parts, images, exclude, noise))
    greedy = ops.convert_to_numpy(beam_search(captioner.parts, images, beam_width=1))
    np.testing.assert_array_equal(sampled, greedy)


def _sample_four(captioner, **rules):
    """Samples for 4 datastore images with fixed noise; `rules` go to `sample_captions`."""
    images = ops.convert_to_tensor(datastore_images()[:4].astype("float32") / 255.0)
    length, vocab = captioner.parts.max_length, captioner.parts.head.units
    noise = np.random.default_rng(0).random((length, 4, vocab), dtype=np.float32)
    return ops.convert_to_numpy(sample_captions(
        captioner.parts, images, ops.full((4,), -1, dtype="int32"), noise, **rules))


def test_sampling_never_repeats_the_previous_word():
    captioner, red = biased_captioner("red")  # "red" beats [END] too
    stutter = _sample_four(captioner, block_repeats=False)
    assert (stutter == red).all(), "without the rule the sampler repeats 'red'"
    rows = _sample_four(captioner)
    end = captioner.vocabulary.end_id
    for row in rows:
        words = row[: list(row).index(end)] if end in row else row
        assert len(words) and words[0] == red
        assert all(a != b for a, b in zip(words, words[1:])), row


def test_sampling_ends_only_where_training_captions_end():
    captioner = ending_captioner()
    assert (_sample_four(captioner)[:, 0] == captioner.vocabulary.end_id).all()
    assert_ends_like_training(captioner.vocabulary,
                              _sample_four(captioner, endings=captioner.endings))


def test_random_noise_gives_well_formed_captions():
    captioner = tiny_captioner()
    images = ops.convert_to_tensor(np.random.default_rng(0).random((8, 16, 16, 3), "float32"))
    length, vocab = captioner.parts.max_length, captioner.parts.head.units
    noise = np.random.default_rng(1).random((length, 8, vocab), dtype=np.float32)
    ids = ops.convert_to_numpy(sample_captions(
        captioner.parts, images, ops.full((8,), -1, dtype="int32"), noise))
    assert ids.shape == (8, length)
    vocabulary = captioner.vocabulary
    banned = {vocabulary.start_id, vocabulary.unk_id}
    for row in ids:
        assert not banned & set(row.tolist())
        ended = np.flatnonzero(row == vocabulary.end_id)
        if len(ended):  # after [END] only [PAD]
            assert (row[ended[0] + 1:] == vocabulary.pad_id).all()
        else:
            assert (row != vocabulary.pad_id).all()
    # Different noise, different samples (the distribution is not a point mass).
    other = ops.convert_to_numpy(sample_captions(
        captioner.parts, images, ops.full((8,), -1, dtype="int32"),
        np.random.default_rng(2).random((length, 8, vocab), dtype=np.float32)))
    assert (other != ids).any()


def _split(images, captions):
    return types.SimpleNamespace(
        images=images, captions=[[c] for c in captions],
        float_images=lambda: images.astype("float32") / 255.0)


def test_trainer_runs_keeps_the_best_epoch_and_resumes(tmp_path):
    captioner = tiny_captioner(retrieval_neighbours=2, copy_successors=True)
    images = datastore_images()
    train = _split(images, DATASTORE_CAPTIONS)
    valid = _split(images[:3], DATASTORE_CAPTIONS[:3])
    before = [w.copy() for w in captioner.backbone.get_weights()]
    trainer = SelfCriticalTrainer(captioner, train, valid, str(tmp_path), num_samples=2,
                                  images_per_step=6, learning_rate=1e-2, run_eagerly=True)
    state = trainer.fit(1, verbose=0)
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [0, 1]
    best = max(h["valid_cider_d"] for h in state["history"])
    assert state["best"] == best
    assert state["history"][state["best_epoch"]]["valid_cider_d"] == best
    assert all(np.isfinite(h["valid_cider_d"]) for h in state["history"])
    assert np.isfinite(state["history"][1]["sampled_reward"])
    assert trainer.scorer.mark_end, "the reward marks the end of each caption by default"
    stored = json.loads((tmp_path / "scst" / "state.json").read_text())
    assert stored["epoch"] == 1
    # The loaded weights are the best epoch's: its validation score again.
    assert trainer.valid_cider() == pytest.approx(best)
    changed = any(not np.array_equal(a, b)
                  for a, b in zip(before, captioner.backbone.get_weights()))
    assert changed == (state["best_epoch"] == 1)
    # A second run with the same number of epochs resumes and trains no more.
    again = SelfCriticalTrainer(captioner, train, valid, str(tmp_path), num_samples=2,
                                images_per_step=6, run_eagerly=True).fit(1, verbose=0)
    assert again["history"] == state["history"]
