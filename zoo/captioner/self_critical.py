"""Self-critical sequence training of the captioner on CIDEr-D.

Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning":
after cross-entropy training, the captioner samples captions, scores each
with CIDEr-D against the image's training references, and raises the
log-probability of the samples that score above a baseline and lowers it for
those below. The baseline of a sample is the mean reward of the other samples
of the same image (the leave-one-out variant of Luo 2020, "A Better Variant
of Self-Critical Sequence Training"), so no greedy decoding is needed. The
reward ends every caption with an end-of-caption word (`CiderD(mark_end=True)`,
the same paper's fix for "bad endings"), so stopping after "a" is not a safe
bet.

Shape legend: B images, n samples per image, L decoder positions, V vocabulary.
"""

import json
import os

import keras
import numpy as np
from keras import ops

from zoo.captioner.decoding import _start_buffer, _write_column, next_word_log_probs
from zoo.compiled import compile_inference
from zoo.captioner.metrics import CiderD
from zoo.captioner.vocabulary import Vocabulary


def sample_captions(parts, images, exclude, noise, block_repeats=True, endings=None):
    """Samples one caption per row with the decoder's cache (Gumbel-max sampling).

    Sampling follows the rules of `beam_search`: `[PAD]`, `[START]` and
    `[UNK]` are never generated, with `block_repeats` neither is the word just
    generated, and with `endings` a caption ends only where a training caption
    could, so training sees the captions decoding can produce.

    Args:
        parts: `DecoderParts` of the backbone.
        images: `(B, S, S, 3)` float in [0, 1].
        exclude: `(B,)` int32 datastore row each image must not retrieve, or -1.
        noise: `(L, B, V)` float32 uniform noise in (0, 1), one draw per step;
            sampling with `argmax(log p + Gumbel(noise))` keeps the loop free of
            random-number state, so it compiles with XLA.
        block_repeats: never sample the previous word again at once.
        endings: `(2, V)` bool from `Vocabulary.endings`, or None for no rule.

    Returns:
        `(B, L)` int32 ids after `[START]`: words, `[END]`, then `[PAD]`.
    """
    max_length = int(noise.shape[0])
    batch_size = ops.shape(images)[0]
    context = parts.encode(images, exclude)
    caches = tuple(parts.init_caches(batch_size, max_length))
    tokens = _start_buffer(batch_size, max_length)  # (B, L + 1)
    finished = ops.zeros((batch_size,), dtype="bool")
    vocab = parts.head.units
    next_log_probs = next_word_log_probs(vocab, block_repeats, endings)
    gumbel = -ops.log(-ops.log(ops.clip(noise, 1e-9, 1.0 - 1e-7)))  # (L, B, V)

    def body(i, tokens, caches, finished):
        current = ops.slice(tokens, [0, i], [batch_size, 1])  # (B, 1)
        logits, caches = parts.decode_step(current, context, list(caches), i)
        log_probs = next_log_probs(logits, current, i)  # (B, V)
        step_noise = ops.take(gumbel, i, axis=0)  # (B, V)
        next_ids = ops.cast(ops.argmax(log_probs + step_noise, axis=-1), "int32")  # (B,)
        next_ids = ops.where(finished, Vocabulary.pad_id, next_ids)
        finished = ops.logical_or(finished, ops.equal(next_ids, Vocabulary.end_id))
        tokens = _write_column(tokens, i + 1, next_ids)
        return i + 1, tokens, tuple(caches), finished

    def cond(i, tokens, caches, finished):
        return ops.logical_and(i < max_length, ops.logical_not(ops.all(finished)))

    _, tokens, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, caches, finished),
        maximum_iterations=max_length,
    )
    return tokens[:, 1:]


def sequence_loss(y_true, y_pred):
    """Per-caption negative log-likelihood: `(B, L)` ids, `(B, L, V)` -> `(B,)`.

    Summed over the non-`[PAD]` targets; Keras multiplies it by the
    advantage passed as `sample_weight`."""
    y_true = ops.cast(y_true, "int32")
    log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
    nll = -ops.take_along_axis(log_probs, y_true[..., None], axis=-1)[..., 0]  # (B, L)
    return ops.sum(nll * ops.cast(ops.not_equal(y_true, Vocabulary.pad_id), "float32"), -1)


def leave_one_out_advantages(rewards):
    """`(B, n)` rewards -> reward minus the mean of the image's other samples."""
    rewards = np.asarray(rewards, dtype="float64")
    n = rewards.shape[1]
    if n < 2:
        raise ValueError(f"Self-critical training needs at least 2 samples per image. "
                         f"Received: {n}")
    baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (n - 1)
    return rewards - baseline


class SelfCriticalTrainer:
    """Fine-tunes a trained captioner backbone on CIDEr-D.

    Each epoch visits the training images in a fixed random order, in chunks
    of `images_per_step`; each chunk takes one optimizer step on
    `num_samples` sampled captions per image (each image kept from retrieving
    itself), weighted by their leave-one-out advantage. After every epoch the
    beam-search CIDEr-D on the validation split is measured; the weights of
    the best epoch (the cross-entropy weights count as epoch 0) are kept, and
    the state is saved in `workdir/scst` so a killed run resumes at the next
    epoch.

    Args:
        captioner: the `Captioner` around the trained backbone.
        train: the training split (`images`, `captions`).
        valid: the validation split.
        workdir: folder for the state and weights.
        num_samples: n, sampled captions per image.
        images_per_step: images per optimizer step.
        learning_rate: Adam learning rate.
        seed: order of the images and the sampling noise.
        jit_compile: compile the train step with XLA.
        mark_end: score the samples with the end-of-caption word (see the
            module doc); False gives plain CIDEr-D as the reward.
        run_eagerly: sample and train step by step in Python instead of
            tracing graphs (small data: tests and debugging).
    """

    def __init__(self, captioner, train, valid, workdir, num_samples=5, images_per_step=16,
                 learning_rate=2e-5, seed=0, jit_compile=True, mark_end=True,
                 run_eagerly=False):
        self.captioner = captioner
        self.model = captioner.backbone
        self.train, self.valid = train, valid
        self.dir = os.path.join(workdir, "scst")
        self.num_samples = int(num_samples)
        self.images_per_step = int(images_per_step)
        self.seed = int(seed)
        self.scorer = CiderD(train.captions, mark_end=mark_end)
        self.model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
                           loss=sequence_loss, jit_compile=jit_compile and not run_eagerly,
                           run_eagerly=run_eagerly)
        # Built before the first weights file is written, so that every file holds the
        # optimizer's variables and loading one (the best weights, or a resume)
        # restores them instead of Keras skipping them with a warning.
        self.model.optimizer.build(self.model.trainable_variables)
        parts = captioner.parts

        def sample(images, exclude, noise, endings):
            return sample_captions(parts, images, exclude, noise, endings=endings)

        self._sample = sample if run_eagerly else compile_inference(sample,
                                                                    self.model.variables)

    def _state(self):
        path = os.path.join(self.dir, "state.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def valid_cider(self):
        from zoo.captioner.metrics import cider_d

        captions = self.captioner.caption_pixels(self.valid.float_images())
        return cider_d(captions, self.valid.captions)[0]

    def _epoch(self, epoch, verbose):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.train.images))
        n, length = self.num_samples, self.captioner.parts.max_length
        vocab = self.captioner.parts.head.units
        rewards_seen = []
        for step, start in enumerate(range(0, len(order), self.images_per_step)):
            rows = np.sort(order[start:start + self.images_per_step])
            images = np.repeat(self.train.images[rows].astype("float32") / 255.0, n, axis=0)
            exclude = np.repeat(rows, n).astype("int32")
            noise = rng.random((length, len(exclude), vocab), dtype=np.float32)
            ids = ops.convert_to_numpy(self._sample(
                ops.convert_to_tensor(images), ops.convert_to_tensor(exclude),
                ops.convert_to_tensor(noise), self.captioner.endings))
            words = [self.captioner.vocabulary.decode(r) for r in ids]
            refs = [self.train.captions[i] for i in exclude]
            rewards = np.reshape(self.scorer.scores(words, refs), (len(rows), n))
            rewards_seen.append(rewards.mean())
            advantages = leave_one_out_advantages(rewards).reshape(-1).astype("float32")
            start_ids = np.full((len(ids), 1), Vocabulary.start_id, dtype="int32")
            inputs = {"images": images, "tokens": np.concatenate([start_ids, ids[:, :-1]], 1)}
            if self.captioner.parts.retrieval is not None:
                inputs["exclude"] = exclude
            self.model.train_on_batch(inputs, ids, sample_weight=advantages)
            if verbose and step % 20 == 0:
                print(f"  scst epoch {epoch} step {step}: mean sampled reward "
                      f"{np.mean(rewards_seen[-20:]):.3f}", flush=True)
        return float(np.mean(rewards_seen))

    def fit(self, epochs, verbose=1):
        """Runs (or resumes) `epochs` epochs; returns the history and loads the best weights."""
        os.makedirs(self.dir, exist_ok=True)
        best_path = os.path.join(self.dir, "best.weights.h5")
        last_path = os.path.join(self.dir, "last.weights.h5")
        state = self._state()
        if state is None:
            score = self.valid_cider()
            self.model.save_weights(best_path)
            state = {"epoch": 0, "best_epoch": 0, "best": score,
                     "history": [{"epoch": 0, "valid_cider_d": score}]}
        else:
            self.model.load_weights(last_path if state["epoch"] else best_path)
        for epoch in range(state["epoch"] + 1, epochs + 1):
            reward = self._epoch(epoch, verbose)
            score = self.valid_cider()
            if verbose:
                print(f"scst epoch {epoch}: mean sampled reward {reward:.3f}, "
                      f"valid CIDEr-D {score:.3f}", flush=True)
            self.model.save_weights(last_path)
            if score > state["best"]:
                self.model.save_weights(best_path)
                state.update(best=score, best_epoch=epoch)
            state["epoch"] = epoch
            state["history"].append({"epoch": epoch, "sampled_reward": reward,
                                     "valid_cider_d": score})
            tmp = os.path.join(self.dir, "state.tmp.json")
            with open(tmp, "w") as f:
                json.dump(state, f)
            os.replace(tmp, os.path.join(self.dir, "state.json"))
        self.model.load_weights(best_path)
        return state
