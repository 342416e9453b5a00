"""Trains the image captioner on human-written captions (Tux Paint stamps and
Openclipart drawings) and writes its zoo checkpoint.

    python -m recipes.train_captioner                 # the shipped model's recipe
    python -m recipes.train_captioner --epochs=5 --workdir=/tmp/cap
    python -m recipes.train_captioner --smoke --workdir=/tmp/cap_smoke

The network retrieves the captions of the training images that look most like
the query and attends to them beside the image patches
(`--retrieval_neighbours`, 0 turns this off); the datastore is the training
split, and each training image is kept from retrieving itself.

Steps: check that the Debian data packages are installed (a missing one stops the
recipe with the command that installs it; `--install_data=true` runs apt-get
itself, as root), read and clean the captions, render and preprocess the images
into the cache folder, split by image, build the word vocabulary on the training
captions, train
with the shared loop (`recipes.training.fit`), then evaluate on the test split
(CIDEr-D and BLEU-4) together with three baselines computed in the same run
(most frequent training caption; nearest-neighbour caption retrieval with raw
16x16 pixels and with the trained encoder's mean-pooled patch features), print
the table, write `evaluation.json` in the workdir and the checkpoint (weights,
vocabulary, manifest with metrics and baselines) under
`<checkpoint_dir>/<name>` (default `<workdir>/checkpoints/<name>`; the shipped one
is retrained in place with `--checkpoint_dir=zoo/checkpoints --overwrite=true`).
"""

import dataclasses
import datetime
import os
import pathlib
import sys
import time

import numpy as np

from recipes.config import (
    ZooRecipeConfig,
    checkpoint_directory,
    parse_args,
    run_main,
    smoke_jit_compile,
)

RECIPE = "python -m recipes.train_captioner"


@dataclasses.dataclass
class CaptionerConfig(ZooRecipeConfig):
    """The captioner recipe config (see `ZooRecipeConfig` for the shared fields).

    Attributes:
        sources: comma-separated data sources, from "tuxpaint,openclipart".
        max_per_caption: images kept per identical caption (0 keeps all).
        split_seed: seed of the train/valid/test split by image.
        valid_fraction, test_fraction: split fractions.
        max_images: keep only this many images (0: all), chosen by hash.
        cache_dir: rendered SVGs and preprocessed arrays; "" for the default
            (`$KERAS_ATTENTION_CACHE/captions` or `~/.cache/keras_attention/captions`).
        install_data: install missing Debian data packages with apt-get (as
            root). Off by default: missing data stops the recipe with the
            command that installs it.
        augment: random shifts of up to `image_size // 16` pixels (white fill),
            applied inside the network while training (`RandomShift`).
        min_word_count: training-caption count for a word to enter the vocabulary
            (1 by default: with retrieval the model can copy any word of a
            retrieved training caption, however rare).
        min_end_share: a caption may end on a word only when at least this
            share of the word's training uses end a caption (0: any word that
            ends one; the default 0.02 rules out "a", which ends 3 of its 645
            uses; see `Vocabulary.build`).
        image_size ... copy_successors: the network, see `zoo.captioner.backbone`.
        beam_width, length_penalty: decoding of the evaluation and the checkpoint.
        scst_epochs: epochs of self-critical training on CIDEr-D after the
            cross-entropy epochs (0: none; `zoo.captioner.self_critical`); the
            epoch with the best validation CIDEr-D is kept.
        scst_samples, scst_images_per_step, scst_learning_rate: its sampled
            captions per image, images per step and Adam learning rate.
        scst_mark_end: its reward ends every caption with an end-of-caption
            word, so captions that stop after "a" earn nothing for it
            (`CiderD(mark_end=True)`); False rewards with plain CIDEr-D.
        name: zoo name of the checkpoint.
        write_checkpoint: write the checkpoint at the end.
        evaluate_only: train nothing: evaluate the existing checkpoint
            (`<checkpoint_dir>/<name>`, or the zoo's `<name>` when `checkpoint_dir`
            is empty) on the test split of its own data config, with the current
            decoding code and the baselines of the same run, and rewrite its
            manifest's metrics and baselines (the training provenance is kept; the
            command is recorded under `evaluation`); a zoo checkpoint's manifest
            only with `--overwrite=true`. For a change of decoding that does not
            need retraining.
    """

    workdir: str = "runs/captioner"
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 300
    final_learning_rate_fraction: float = 0.02
    weight_decay: float = 0.05
    clipnorm: float = 1.0
    label_smoothing: float = 0.1
    sources: str = "tuxpaint,openclipart"
    max_per_caption: int = 3
    split_seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    max_images: int = 0
    cache_dir: str = ""
    install_data: bool = False
    augment: bool = True
    min_word_count: int = 1
    min_end_share: float = 0.02
    image_size: int = 64
    patch_size: int = 8
    hidden_dim: int = 96
    num_heads: int = 4
    intermediate_dim: int = 192
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_caption_length: int = 16
    dropout: float = 0.2
    retrieval_neighbours: int = 4
    fusion_layers: int = 1
    copy_successors: bool = True
    beam_width: int = 4
    length_penalty: float = 0.6
    scst_epochs: int = 12
    scst_samples: int = 5
    scst_images_per_step: int = 16
    scst_learning_rate: float = 2e-5
    scst_mark_end: bool = True
    name: str = "captioner_tuxpaint_openclipart"
    write_checkpoint: bool = True
    evaluate_only: bool = False


DEFAULT = CaptionerConfig()
SMOKE = dataclasses.replace(
    DEFAULT, workdir="runs/captioner_smoke", epochs=1, batch_size=8, warmup_steps=2,
    sources="tuxpaint", max_images=48, valid_fraction=0.2, test_fraction=0.2,
    min_word_count=1, image_size=32, hidden_dim=32, num_heads=2, intermediate_dim=32,
    encoder_layers=1, decoder_layers=1, max_caption_length=8, retrieval_neighbours=2,
    beam_width=2, scst_epochs=1, scst_samples=2, scst_images_per_step=32,
    jit_compile=smoke_jit_compile(), verbose=0, smoke=True,
)


def _sources(config):
    sources = tuple(s.strip() for s in config.sources.split(",") if s.strip())
    from zoo.captioner import data as data_lib

    if not sources or any(s not in data_lib.SOURCES for s in sources):
        raise ValueError(f"--sources must be a comma-separated subset of "
                         f"{','.join(data_lib.SOURCES)}. Received: --sources={config.sources}")
    return sources


def prepare_data(config):
    """Records -> preprocessed splits and the vocabulary: `(splits, vocabulary, stats)`."""
    from zoo.captioner import data as data_lib
    from zoo.captioner.vocabulary import Vocabulary

    sources = _sources(config)
    data_lib.ensure_data(sources, install=config.install_data)
    records = data_lib.read_records(sources, config.max_per_caption, config.split_seed)
    if config.max_images:
        ranked = sorted(records, key=lambda r: data_lib._hash_unit(r.id, "subset"))
        keep = {r.id for r in ranked[: config.max_images]}
        records = [r for r in records if r.id in keep]
    splits, stats = data_lib.load_splits(
        records, config.image_size, config.cache_dir or None, config.split_seed,
        config.valid_fraction, config.test_fraction, verbose=config.verbose > 0,
    )
    for name in ("train", "valid", "test"):
        if not len(splits[name]):
            raise ValueError(f"The {name} split is empty ({stats}); use more images or "
                             f"larger fractions. Received: --max_images={config.max_images}")
    vocabulary = Vocabulary.build(
        [c for caps in splits["train"].captions for c in caps], config.min_word_count,
        min_end_share=config.min_end_share,
    )
    stats["vocabulary_size"] = len(vocabulary)
    return splits, vocabulary, stats


def datastore_captions(split, vocabulary, length):
    """`(M, length)` ids of each image's main caption, without `[START]`."""
    return np.stack([vocabulary.encode(captions[0], length + 1)[1:]
                     for captions in split.captions])


def make_dataset(split, vocabulary, config, training):
    """`({"images", "tokens"[, "exclude"]}, targets)` batches, one example per
    (image, caption). Images are not augmented here: the network shifts them
    itself while training (`augment_shift` of `build_backbone`). With retrieval, "exclude" is the image's row in the
    training datastore while training (so it never retrieves itself) and -1
    otherwise."""
    import tensorflow as tf

    length = config.max_caption_length
    image_index, ids = [], []
    for i, captions in enumerate(split.captions):
        for caption in captions:
            image_index.append(i)
            ids.append(vocabulary.encode(caption, length + 1))
    images = tf.constant(split.images)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(image_index, "int32"), np.stack(ids)))
    if training:
        ds = ds.shuffle(len(ids), seed=config.seed, reshuffle_each_iteration=True)

    def example(index, token_ids):
        image = tf.cast(tf.gather(images, index), tf.float32) / 255.0
        inputs = {"images": image, "tokens": token_ids[:-1]}
        if config.retrieval_neighbours:
            inputs["exclude"] = index if training else tf.constant(-1, tf.int32)
        return inputs, token_ids[1:]

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(config.batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def caption_loss(label_smoothing=0.0):
    """Cross-entropy of the next word with label smoothing, `[PAD]` targets masked.

    `y_true (B, T)` int ids, `y_pred (B, T, V)` logits; the mean over non-pad
    positions of `(1 - e) * nll + e * mean_v(-log p_v)`, `e = label_smoothing`.
    """
    from keras import ops

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)  # (B, T, V)
        nll = -ops.take_along_axis(log_probs, y_true[..., None], axis=-1)[..., 0]
        per_token = (1.0 - label_smoothing) * nll - label_smoothing * ops.mean(log_probs, -1)
        mask = ops.cast(ops.not_equal(y_true, 0), "float32")  # (B, T)
        return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)

    return loss


def evaluate(captioner, splits, config):
    """Test-split metrics of the model and of the baselines: `(rows, metrics, baselines)`."""
    from zoo.captioner import baselines as base
    from zoo.captioner.metrics import evaluate_captions

    train, test = splits["train"], splits["test"]
    refs = test.captions
    test_pixels = test.float_images()
    rows, baselines = [], {}
    beam = captioner.caption_pixels(test_pixels, config.beam_width)
    greedy = captioner.caption_pixels(test_pixels, 1)
    metrics = evaluate_captions(beam, refs)
    rows.append({"system": f"captioner, beam {config.beam_width}", **metrics})
    rows.append({"system": "captioner, greedy", **evaluate_captions(greedy, refs)})
    metrics["greedy_cider_d"] = rows[-1]["cider_d"]
    metrics["greedy_bleu4"] = rows[-1]["bleu4"]

    frequent = base.most_frequent_caption(train.captions)
    baselines["most_frequent_caption"] = evaluate_captions([frequent] * len(test), refs)
    pixel_nn = base.nearest_neighbour_captions(
        base.pixel_features(train.images), train.captions, base.pixel_features(test.images))
    baselines["nearest_neighbour_pixels"] = evaluate_captions(pixel_nn, refs)
    encoder_nn = base.nearest_neighbour_captions(
        captioner.image_features(train.float_images()), train.captions,
        captioner.image_features(test_pixels))
    baselines["nearest_neighbour_encoder"] = evaluate_captions(encoder_nn, refs)
    names = {
        "most_frequent_caption": f"most frequent caption ({frequent!r})",
        "nearest_neighbour_pixels": "nearest neighbour, 16x16 pixels",
        "nearest_neighbour_encoder": "nearest neighbour, encoder features",
    }
    for key, values in baselines.items():
        rows.append({"system": names[key], **values})
    examples = [
        {"id": test.ids[i], "references": refs[i], "captioner": beam[i],
         "nearest_neighbour_pixels": pixel_nn[i], "nearest_neighbour_encoder": encoder_nn[i]}
        for i in range(min(20, len(test)))
    ]
    return rows, metrics, baselines, examples


def main(argv=None):
    """Runs the recipe; returns the evaluation payload (None for --help)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_args(argv, DEFAULT, SMOKE)
    if config is None:
        return None
    import keras

    from recipes import training
    from zoo import checkpoint
    from zoo.captioner import data as data_lib
    from zoo.captioner.backbone import build_backbone, check_model_config
    from zoo.captioner.captioner import VOCABULARY_FILE, WEIGHTS_FILE, Captioner
    from zoo.captioner.familiarity import FILE_NAME as FAMILIARITY_FILE

    if config.evaluate_only:
        return evaluate_checkpoint(config, argv)
    target = checkpoint_directory(config, config.name) if config.write_checkpoint else None
    check_model_config(config.image_size, config.patch_size, config.hidden_dim,
                       config.num_heads, config.retrieval_neighbours, config.fusion_layers)
    start = time.perf_counter()
    splits, vocabulary, stats = prepare_data(config)
    data_seconds = time.perf_counter() - start
    print(f"Data ({data_seconds:.0f} s): {stats}")
    train_ds = make_dataset(splits["train"], vocabulary, config, training=True)
    valid_ds = make_dataset(splits["valid"], vocabulary, config, training=False)

    train = splits["train"]

    def build_model():
        model = build_backbone(
            len(vocabulary), image_size=config.image_size, patch_size=config.patch_size,
            hidden_dim=config.hidden_dim, num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim, encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            max_caption_length=config.max_caption_length, dropout=config.dropout,
            retrieval_neighbours=config.retrieval_neighbours,
            fusion_layers=config.fusion_layers, datastore_size=len(train),
            augment_shift=max(1, config.image_size // 16) if config.augment else 0,
            copy_successors=config.copy_successors,
        )
        if config.retrieval_neighbours:
            model.get_layer("retrieval").set_datastore(
                train.images, datastore_captions(train, vocabulary, config.max_caption_length))
        return model

    model, info = training.fit(config, build_model, train_ds, valid_ds,
                               caption_loss(config.label_smoothing))
    captioner = Captioner(model, vocabulary, config.beam_width, config.length_penalty)
    scst = None
    if config.scst_epochs:
        from zoo.captioner.self_critical import SelfCriticalTrainer

        scst_start = time.perf_counter()
        trainer = SelfCriticalTrainer(
            captioner, train, splits["valid"], config.workdir, config.scst_samples,
            config.scst_images_per_step, config.scst_learning_rate, config.seed,
            config.jit_compile, mark_end=config.scst_mark_end,
            run_eagerly=config.smoke and not config.jit_compile)
        scst = trainer.fit(config.scst_epochs, verbose=config.verbose)
        scst["session_seconds"] = time.perf_counter() - scst_start
        info["train_seconds"] += scst["session_seconds"]
    rows, metrics, baselines, examples = evaluate(captioner, splits, config)
    profile_file, familiar = familiarity(captioner, splits, config.workdir)
    total_seconds = time.perf_counter() - start
    payload = _write_evaluation(
        rows, config.workdir,
        extra={"metrics": metrics, "baselines": baselines, "data": stats,
               "examples": examples, "train_seconds": info["train_seconds"],
               "self_critical": scst, "familiarity": familiar,
               "total_seconds": total_seconds, "config": config.to_dict()},
    )
    if target is not None:
        weights = os.path.join(config.workdir, "final.weights.h5")
        model.save_weights(weights)
        command = " ".join([RECIPE, *argv])
        sources = _sources(config)
        manifest = {
            "name": config.name,
            "task": "caption",
            "recipe": command,
            "config": config.to_dict(),
            "data": {
                "source": "; ".join(
                    f"{s}: {data_lib.PACKAGES[s]} ({'stamps' if s == 'tuxpaint' else 'SVG'})"
                    for s in sources),
                "licence": "; ".join(data_lib.LICENCES[s] for s in sources),
                "split": (f"by image: sha256(seed:image id) -> test {config.test_fraction}, "
                          f"valid {config.valid_fraction}, rest train"),
                "split_seed": config.split_seed,
                "counts": stats,
            },
            "metrics": metrics,
            "main_metric": "cider_d",
            "datastore_size": len(train) if config.retrieval_neighbours else 0,
            "baselines": baselines,
            "self_critical": scst,
            "training_time_s": round(info["train_seconds"], 1),
            "total_time_s": round(total_seconds, 1),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "precision": info["precision"],
            "created": datetime.date.today().isoformat(),
        }
        manifest["familiarity"] = familiar
        checkpoint.write_checkpoint(
            target, {WEIGHTS_FILE: weights, VOCABULARY_FILE: vocabulary.to_json().encode(),
                     FAMILIARITY_FILE: profile_file},
            manifest, overwrite=config.overwrite, smoke=config.smoke)
        print(f"Checkpoint written to {target}")
        payload["checkpoint"] = str(pathlib.Path(target))
    return payload


def familiarity(captioner, splits, workdir):
    """Fits the familiarity profile (`zoo.captioner.familiarity`) on the training and
    validation images, writes it to the workdir and returns `(path, summary)`: the
    summary, for the manifest, has the threshold and how the test images fare."""
    from zoo.captioner import familiarity as familiarity_lib

    profile = familiarity_lib.fit_familiarity(
        captioner.image_features(splits["train"].float_images()),
        captioner.image_features(splits["valid"].float_images()))
    test = familiarity_lib.distances(profile,
                                     captioner.image_features(splits["test"].float_images()))
    path = os.path.join(workdir, familiarity_lib.FILE_NAME)
    familiarity_lib.save_profile(profile, path)
    threshold = float(profile["threshold"])
    summary = {
        "measure": "Mahalanobis distance of the mean-pooled encoder features from a "
                   "Gaussian fitted to the training images",
        "rule": "unfamiliar above the 98th percentile of the validation distances",
        "threshold": round(threshold, 3),
        "valid_max": round(float(profile["valid_max"]), 3),
        "test_max": round(float(np.max(test)), 3),
        "test_unfamiliar": int(np.sum(test > threshold)),
    }
    print(f"Familiarity: {summary}")
    return path, summary


def evaluate_checkpoint(config, argv):
    """`--evaluate_only`: test metrics of the existing checkpoint, written back to it."""
    from zoo import checkpoint
    from zoo.captioner.captioner import VOCABULARY_FILE, WEIGHTS_FILE, load_captioner
    from zoo.captioner.familiarity import FILE_NAME as FAMILIARITY_FILE

    root = config.checkpoint_dir or checkpoint.checkpoints_root()
    target = pathlib.Path(root) / config.name
    manifest = checkpoint.verify_checkpoint(target, RECIPE)
    try:
        checkpoint.check_destination(target, overwrite=config.overwrite)
        rewrite = True
    except checkpoint.CheckpointError:
        rewrite = False
    # The data and decoding of the checkpoint's own run; only where the data lives
    # and whether packages may be installed come from this command line.
    fields = {f.name for f in dataclasses.fields(CaptionerConfig)}
    trained = dataclasses.replace(
        config, **{k: v for k, v in manifest["config"].items()
                   if k in fields and k not in ("cache_dir", "install_data", "workdir",
                                                "checkpoint_dir", "overwrite",
                                                "evaluate_only")})
    start = time.perf_counter()
    splits, _, stats = prepare_data(trained)
    if stats != manifest["data"]["counts"]:
        raise ValueError(f"The data differ from those of the checkpoint's run: {stats} != "
                         f"{manifest['data']['counts']}. Nothing was written.")
    captioner = load_captioner(target, manifest)
    rows, metrics, baselines, examples = evaluate(captioner, splits, trained)
    os.makedirs(config.workdir, exist_ok=True)
    profile_file, familiar = familiarity(captioner, splits, config.workdir)
    command = " ".join([RECIPE, *argv])
    payload = _write_evaluation(
        rows, config.workdir,
        extra={"metrics": metrics, "baselines": baselines, "data": stats,
               "examples": examples, "checkpoint": str(target), "evaluation_command": command,
               "familiarity": familiar, "total_seconds": time.perf_counter() - start},
    )
    if not rewrite:
        print(f"{target} is a zoo checkpoint: its manifest is left as it is "
              "(--overwrite=true records these metrics in it)")
        return payload
    updated = {k: v for k, v in manifest.items() if k != "files"}
    updated.update(metrics=metrics, baselines=baselines, familiarity=familiar, evaluation={
        "command": command, "date": datetime.date.today().isoformat(),
        "seconds": round(time.perf_counter() - start, 1)})
    checkpoint.write_checkpoint(target, {WEIGHTS_FILE: target / WEIGHTS_FILE,
                                         VOCABULARY_FILE: target / VOCABULARY_FILE,
                                         FAMILIARITY_FILE: profile_file}, updated,
                                overwrite=config.overwrite)
    print(f"Metrics of {target} rewritten")
    return payload


def _write_evaluation(rows, workdir, extra):
    from recipes import training

    return training.write_evaluation(
        rows, os.path.join(workdir, "evaluation.json"), extra=extra,
        title="Captioning on the test split (CIDEr-D, BLEU-4)")


if __name__ == "__main__":
    sys.exit(run_main(main))
