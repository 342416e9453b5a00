"""Quickstart: a small attention classifier trained on real handwritten digits.

Each 8x8 image of scikit-learn's digits set (1,797 images from UCI, shipped inside
scikit-learn) becomes a sequence of 8 row tokens. Two Transformer encoder blocks
and an attention-pooling head classify it. The held-out test split is never seen in
training; its accuracy is printed beside two baselines computed in the same run:
the majority class and a logistic regression on the raw pixels.

    python -m recipes.quickstart            # about a minute on a 2-core CPU
    python -m recipes.quickstart --epochs=3 # a quick look
    python -m recipes.quickstart --smoke --workdir=/tmp/q  # seconds, for tests

Re-running with the same `--workdir` resumes after the last finished epoch.
"""

import dataclasses
import os
import sys

import keras
import numpy as np

from recipes.config import TrainConfig, parse_args, run_main, smoke_jit_compile


def load_digit_splits(seed=0, test_fraction=0.2, valid_fraction=0.1):
    """(x, y) train/valid/test splits of the digits, stratified, fixed by `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")  # (1797, 8, 8) in [0, 1]
    y = digits.target.astype("int32")
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=valid_fraction / (1 - test_fraction),
        random_state=seed, stratify=y_rest,
    )
    return (x_train, y_train), (x_valid, y_valid), (x_test, y_test)


def build_model(num_heads=4, hidden_dim=32, num_blocks=2, num_classes=10):
    """Rows as tokens -> sinusoidal positions -> encoder blocks -> attention pooling."""
    from keras_attention.layers import (
        AttentionPooling,
        SinusoidalPositionEncoding,
        TransformerEncoderBlock,
    )

    inputs = keras.Input(shape=(8, 8), name="rows")
    x = keras.layers.Dense(hidden_dim, name="row_embedding")(inputs)
    x = x + SinusoidalPositionEncoding(name="positions")(x)
    for i in range(num_blocks):
        x = TransformerEncoderBlock(num_heads, 2 * hidden_dim, name=f"encoder_{i}")(x)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    x = AttentionPooling(num_heads=num_heads, name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_transformer")


def baselines(train, test):
    """Test accuracy of the majority class and of a logistic regression on pixels."""
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_test, y_test) = train, test
    majority = np.bincount(y_train).argmax()
    logreg = LogisticRegression(max_iter=2000).fit(x_train.reshape(len(x_train), -1), y_train)
    return {
        "majority_class": float(np.mean(y_test == majority)),
        "logistic_regression": float(logreg.score(x_test.reshape(len(x_test), -1), y_test)),
    }


@dataclasses.dataclass
class QuickstartConfig(TrainConfig):
    """Quickstart fields; see `TrainConfig` for the shared ones."""

    workdir: str = "runs/quickstart"
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    clipnorm: float = 0.0
    verbose: int = 2


DEFAULT = QuickstartConfig()
SMOKE = QuickstartConfig(workdir="runs/quickstart_smoke", epochs=3, verbose=0, smoke=True,
                         jit_compile=smoke_jit_compile())


def make_datasets(config):
    """Shuffled train and plain valid `tf.data` pipelines, plus the raw splits."""
    import tensorflow as tf

    train, valid, test = load_digit_splits(config.seed)
    train_ds = (
        tf.data.Dataset.from_tensor_slices(train)
        .shuffle(len(train[0]), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
    )
    valid_ds = tf.data.Dataset.from_tensor_slices(valid).batch(256)
    return train_ds, valid_ds, (train, valid, test)


def main(argv=None):
    from recipes import training

    config = parse_args(sys.argv[1:] if argv is None else argv, DEFAULT, SMOKE)
    if config is None:
        return None
    train_ds, valid_ds, (train, _, test) = make_datasets(config)
    model, info = training.fit(
        config, build_model, train_ds, valid_ds,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], monitor="val_accuracy", mode="max",
    )
    logits = model.predict(test[0], verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == test[1]))
    results = {"test_accuracy": accuracy, **baselines(train, test),
               "train_size": len(train[0]), "test_size": len(test[0]),
               "resumed_from_epoch": info["resumed_from_epoch"]}
    rows = [
        {"model": "attention classifier", "accuracy": accuracy},
        {"model": "logistic regression (baseline)",
         "accuracy": results["logistic_regression"]},
        {"model": "majority class (baseline)", "accuracy": results["majority_class"]},
    ]
    training.write_evaluation(
        rows, os.path.join(config.workdir, "evaluation.json"), extra=results,
        title="Digits test split (never seen in training)",
    )
    return results


if __name__ == "__main__":
    sys.exit(run_main(main))
