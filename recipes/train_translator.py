"""Trains the English -> Spanish translators and writes their zoo checkpoints.

    python -m recipes.train_translator                    # both models, full run
    python -m recipes.train_translator --models=bahdanau  # the GRU baseline only
    python -m recipes.train_translator --smoke --workdir=/tmp/t
    python -m recipes.train_translator --checkpoint_dir=zoo/checkpoints --overwrite=true
    python -m recipes.train_translator --data=my_pairs.tsv  # english<TAB>spanish lines
    python -m recipes.train_translator --evaluate_only=true --workdir=/tmp/t_eval

Data: the Tatoeba pairs (see `zoo.translator.data`), split by unique English sentence
into train/valid/test (90/5/5 by a hash of the text, `seed`). A shared WordPiece
vocabulary is trained on the training split. The Transformer and the GRU +
additive-attention baseline are trained in turn with the shared loop, then both are
evaluated on the same test split with sacreBLEU and chrF (all Spanish translations of
a test sentence are its references), beside a copy-the-source baseline. Each model's
checkpoint goes to `<checkpoint_dir>/<name>` (default `<workdir>/checkpoints/<name>`)
with a manifest holding the metrics of both; the fourth command above retrains the
shipped models in place. `--evaluate_only=true` trains nothing: it scores the
existing checkpoints again (see `evaluate_checkpoints`).

The same commands run on TensorFlow and on JAX (`KERAS_BACKEND=jax`): the data
pipeline and tokenisation are TensorFlow string ops outside the model, and the
model only sees integer arrays.
"""

import dataclasses
import json
import os
import sys
import time

from recipes.config import (
    ZooRecipeConfig,
    checkpoint_directory,
    parse_args,
    run_main,
    smoke_jit_compile,
)

COMMAND = "python -m recipes.train_translator"
NAMES = {"transformer": "translator_en_es", "bahdanau": "translator_en_es_bahdanau"}


@dataclasses.dataclass
class TranslatorConfig(ZooRecipeConfig):
    """Translator recipe fields (see `ZooRecipeConfig` for the shared ones).

    Attributes:
        models: comma-separated models to train: "transformer", "bahdanau".
        data: a tab-separated `english<TAB>spanish` file; empty for Tatoeba.
        vocabulary_size: WordPiece vocabulary size (shared by both languages).
        max_length: longest source/target in subword tokens; longer training
            pairs are dropped, longer inputs truncated.
        hidden_dim, num_heads, intermediate_dim, num_layers, dropout: Transformer
            size (the GRU uses `hidden_dim` and `dropout`).
        bahdanau_epochs: epochs of the GRU baseline.
        beam_size: beam size used for evaluation and by the shipped model.
        train_limit: use only the first N training pairs (0: all).
        eval_limit: evaluate on the first N test sentences (0: all).
        note: free text copied into the checkpoint manifests (e.g. how a run was
            resumed with a different schedule).
        evaluate_only: train nothing: score the checkpoints of `models` in
            `checkpoint_dir` (default: the zoo's) on their own test split and
            compare with their manifests; nothing is written there.
    """

    workdir: str = "runs/translator"
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 1000
    final_learning_rate_fraction: float = 0.02
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    models: str = "transformer,bahdanau"
    data: str = ""
    vocabulary_size: int = 8000
    max_length: int = 40
    hidden_dim: int = 256
    num_heads: int = 4
    intermediate_dim: int = 512
    num_layers: int = 3
    dropout: float = 0.1
    bahdanau_epochs: int = 6
    beam_size: int = 4
    train_limit: int = 0
    eval_limit: int = 0
    note: str = ""
    evaluate_only: bool = False


DEFAULT = TranslatorConfig()
SMOKE = TranslatorConfig(
    workdir="runs/translator_smoke", epochs=2, bahdanau_epochs=1, steps_per_epoch=3,
    batch_size=16, warmup_steps=2, vocabulary_size=300, hidden_dim=32, num_heads=2,
    intermediate_dim=64, num_layers=1, beam_size=2, train_limit=400, eval_limit=16,
    max_length=16, smoke=True, verbose=0, jit_compile=smoke_jit_compile(),
)


def model_config(config, kind):
    """The config dict stored in a checkpoint manifest for model `kind`."""
    keys = ["vocabulary_size", "max_length", "hidden_dim", "dropout", "beam_size"]
    if kind == "transformer":
        keys += ["num_heads", "intermediate_dim", "num_layers"]
    out = {k: getattr(config, k) for k in keys}
    out["model"] = kind
    if kind == "bahdanau":
        out["beam_size"] = 1
    return out


def _models(config):
    kinds = [k.strip() for k in config.models.split(",") if k.strip()]
    for kind in kinds:
        if kind not in NAMES:
            raise ValueError(
                f"--models takes a comma-separated subset of {sorted(NAMES)}. "
                f"Received: models={config.models}"
            )
    if not kinds:
        raise ValueError(f"--models is empty. Received: models={config.models!r}")
    return kinds


def load_splits(config):
    from zoo.translator import data

    pairs = data.read_pairs(config.data or None)
    splits = data.split_pairs(pairs, seed=config.seed)
    if config.train_limit:
        splits["train"] = splits["train"][: config.train_limit]
        splits["valid"] = splits["valid"][: max(config.train_limit // 10, 8)]
    if config.eval_limit:
        splits["test"] = splits["test"][: config.eval_limit]
    for name in ("train", "valid", "test"):
        if not splits[name]:
            raise ValueError(
                f"The {name} split is empty: the data has too few distinct English "
                f"sentences ({len(pairs)} pairs). Received: data={config.data or 'Tatoeba'}"
            )
    return splits


def vocabulary_for(config, splits):
    """Trains the WordPiece vocabulary once per workdir and reuses it on resume."""
    from recipes.training import atomic_write_json
    from zoo.translator import tokenizer

    path = os.path.join(config.workdir, "vocabulary.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    sentences = [e for e, _ in splits["train"]] + [s for _, s in splits["train"]]
    vocabulary = tokenizer.train_vocabulary(sentences, config.vocabulary_size)
    os.makedirs(config.workdir, exist_ok=True)
    atomic_write_json(path, vocabulary)
    return vocabulary


def make_dataset(tok, pairs, config, training):
    """Batched `({"encoder_tokens", "decoder_tokens"}, labels)`, bucketed by length."""
    import tensorflow as tf

    from zoo.translator.tokenizer import BOS_ID, EOS_ID

    source = tok.tokenize(tf.constant([e for e, _ in pairs]))
    target = tok.tokenize(tf.constant([s for _, s in pairs]))
    keep = tf.logical_and(
        source.row_lengths() <= config.max_length,
        target.row_lengths() + 1 <= config.max_length,
    )
    keep = tf.logical_and(keep, source.row_lengths() > 0)
    source = tf.ragged.boolean_mask(source, keep)
    target = tf.ragged.boolean_mask(target, keep)
    count = int(source.nrows())
    ds = tf.data.Dataset.from_tensor_slices((source, target))
    if training:
        ds = ds.shuffle(count, seed=config.seed, reshuffle_each_iteration=True)

    def to_example(src, tgt):
        decoder_in = tf.concat([[BOS_ID], tgt], 0)
        labels = tf.concat([tgt, [EOS_ID]], 0)
        return src, decoder_in, labels

    ds = ds.map(to_example)
    boundaries = [b for b in (8, 12, 16, 24, 32) if b < config.max_length]
    boundaries.append(config.max_length + 1)
    ds = ds.bucket_by_sequence_length(
        lambda s, d, l: tf.maximum(tf.shape(s)[0], tf.shape(d)[0]),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        pad_to_bucket_boundary=True,
        drop_remainder=training,
    )
    ds = ds.map(lambda s, d, l: ({"encoder_tokens": s, "decoder_tokens": d}, l))
    return ds.prefetch(tf.data.AUTOTUNE), count


def masked_loss(label_smoothing):
    """Token cross-entropy with label smoothing, ignoring padding (id 0)."""
    from keras import ops

    def loss(y_true, y_pred):
        vocab = ops.shape(y_pred)[-1]
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        onehot = ops.one_hot(y_true, vocab)
        smooth = onehot * (1.0 - label_smoothing) + label_smoothing / ops.cast(vocab, "float32")
        per_token = -ops.sum(smooth * log_probs, axis=-1)  # (B, T)
        mask = ops.cast(ops.not_equal(y_true, 0), "float32")
        return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)

    return loss


def masked_accuracy(y_true, y_pred):
    from keras import ops

    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, -1), "int32"), y_true), "float32")
    return ops.sum(hit * mask) / ops.maximum(ops.sum(mask), 1.0)


def evaluate(translations, test):
    """sacreBLEU and chrF of `translations` against the references of `test`."""
    import sacrebleu

    refs = [r for _, r in test]
    width = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    bleu = sacrebleu.corpus_bleu(translations, streams)
    chrf = sacrebleu.corpus_chrf(translations, streams)
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}


def train_one(config, kind, tok, train_ds, valid_ds):
    import keras

    from recipes import training
    from zoo.translator.translator import build_model, config_model_args

    mconf = model_config(config, kind)
    run = dataclasses.replace(
        config,
        workdir=os.path.join(config.workdir, kind),
        epochs=config.epochs if kind == "transformer" else config.bahdanau_epochs,
    )

    def build():
        model = build_model(kind, tok.vocabulary_size, **config_model_args(mconf))
        model({"encoder_tokens": keras.ops.ones((1, 3), "int32"),
               "decoder_tokens": keras.ops.ones((1, 2), "int32")})
        return model

    model, info = training.fit(
        run, build, train_ds, valid_ds,
        loss=masked_loss(config.label_smoothing), metrics=[masked_accuracy],
    )
    return model, info


def _save_inference_weights(model, kind, config, vocabulary_size, path):
    """Saves the weights without the optimizer state (a fresh, uncompiled copy)."""
    import keras

    from zoo.translator.translator import build_model, config_model_args

    clone = build_model(kind, vocabulary_size, **config_model_args(model_config(config, kind)))
    clone({"encoder_tokens": keras.ops.ones((1, 3), "int32"),
           "decoder_tokens": keras.ops.ones((1, 2), "int32")})
    clone.set_weights(model.get_weights())
    clone.save_weights(path)


def evaluate_checkpoints(config, kinds):
    """`--evaluate_only`: the test metrics of existing checkpoints, recomputed.

    Each checkpoint `<checkpoint_dir>/<name>` (default: the zoo's folder) is
    verified and loaded, and decoded as its manifest says (`max_length`, beam
    size) on the test split of its manifest's split seed (the first
    `eval_limit` sentences when set). The table (with the manifest's figures
    and the backend) is printed and written to `workdir/evaluation.json`; the
    checkpoints are only read.
    """
    import keras

    from recipes import training
    from zoo import checkpoint as ckpt
    from zoo.translator.translator import load_translator

    root = config.checkpoint_dir or str(ckpt.checkpoints_root())
    rows = []
    for kind in kinds:
        directory = os.path.join(root, NAMES[kind])
        manifest = ckpt.verify_checkpoint(directory, COMMAND)
        translator = load_translator(directory, manifest)
        splits = load_splits(dataclasses.replace(
            config, seed=manifest["data"]["split_seed"], train_limit=0))
        test = splits["test"]
        start = time.perf_counter()
        hypotheses = translator.translate([e for e, _ in test])
        decode_s = time.perf_counter() - start
        scores = evaluate(hypotheses, test)
        recorded = manifest["metrics"]
        rows.append({"model": NAMES[kind], "backend": keras.backend.backend(),
                     "test_sentences": len(test), **scores,
                     "manifest_bleu": recorded["bleu"], "manifest_chrf": recorded["chrf"],
                     "manifest_test_sentences": recorded["test_sentences"],
                     "decode_s": round(decode_s, 1)})
    training.write_evaluation(
        rows, os.path.join(config.workdir, "evaluation.json"),
        extra={"checkpoint_dir": root, "config": config.to_dict()},
        title="English -> Spanish checkpoints, test split (re-evaluated)")
    return 0


def main(argv=None):
    config = parse_args(sys.argv[1:] if argv is None else argv, DEFAULT, SMOKE)
    if config is None:
        return 0
    kinds = _models(config)
    if config.evaluate_only:
        return evaluate_checkpoints(config, kinds)
    directories = {kind: checkpoint_directory(config, NAMES[kind]) for kind in kinds}

    import keras

    from recipes import training
    from zoo import checkpoint as ckpt
    from zoo.translator import data
    from zoo.translator.tokenizer import SubwordTokenizer
    from zoo.translator.translator import Translator

    splits = load_splits(config)
    vocabulary = vocabulary_for(config, splits)
    tok = SubwordTokenizer(vocabulary)
    train_ds, train_count = make_dataset(tok, splits["train"], config, training=True)
    valid_ds, _ = make_dataset(tok, splits["valid"], config, training=False)
    if config.steps_per_epoch <= 0:
        config = dataclasses.replace(
            config, steps_per_epoch=max(train_count // config.batch_size, 1)
        )

    test = splits["test"]
    sources = [e for e, _ in test]
    rows = [{"model": "copy source (baseline)", **evaluate(sources, test),
             "train_s": 0.0}]
    trained = {}
    for kind in kinds:
        model, info = train_one(config, kind, tok, train_ds, valid_ds)
        beam = config.beam_size if kind == "transformer" else 1
        translator = Translator(model, tok, kind=kind, max_length=config.max_length,
                                beam_size=beam)
        start = time.perf_counter()
        hypotheses = translator.translate(sources)
        decode_s = time.perf_counter() - start
        scores = evaluate(hypotheses, test)
        label = "Transformer" if kind == "transformer" else "GRU + additive attention"
        rows.append({"model": f"{label} (beam {beam})", **scores,
                     "train_s": round(info["train_seconds"], 1)})
        trained[kind] = (model, info, scores, decode_s, hypotheses[:5])

    split_sizes = {k: len(v) for k, v in splits.items()}
    extra = {
        "config": config.to_dict(),
        "split_sizes": split_sizes,
        "test_references": sum(len(r) for _, r in test),
        "examples": {k: list(zip(sources[:5], v[4])) for k, v in trained.items()},
    }
    training.write_evaluation(rows, os.path.join(config.workdir, "evaluation.json"),
                              extra=extra, title="English -> Spanish, test split")

    command = " ".join([COMMAND] + (sys.argv[1:] if argv is None else list(argv)))
    for kind, (model, info, scores, decode_s, _) in trained.items():
        weights = os.path.join(config.workdir, kind, "final.weights.h5")
        _save_inference_weights(model, kind, config, tok.vocabulary_size, weights)
        manifest = {
            "name": NAMES[kind],
            "task": "translate",
            "recipe": command,
            "config": model_config(config, kind),
            "data": {
                "source": config.data or data.SOURCE,
                "licence": "user data" if config.data else data.LICENCE,
                "split": "by unique English sentence, sha256 hash: 90% train, "
                         "5% valid, 5% test; all translations of a test sentence "
                         "are references",
                "split_seed": config.seed,
                "split_sizes": split_sizes,
            },
            "metrics": {**scores, "test_sentences": len(test),
                        "decode_seconds": round(decode_s, 1)},
            "main_metric": "bleu",
            "baselines": {r["model"]: {"bleu": r["bleu"], "chrf": r["chrf"]}
                          for r in rows},
            "training_time_s": round(info["train_seconds"], 1),
            "epochs": config.epochs if kind == "transformer" else config.bahdanau_epochs,
            "note": config.note,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "created": time.strftime("%Y-%m-%d"),
        }
        ckpt.write_checkpoint(
            directories[kind],
            {"model.weights.h5": weights,
             "vocabulary.json": json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")},
            manifest, overwrite=config.overwrite, smoke=config.smoke,
        )
        print(f"Wrote {directories[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
