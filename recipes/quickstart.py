"""Quickstart: a small attention classifier trained on real handwritten digits.

Each 8x8 image of scikit-learn's digits set (1,797 images from UCI, shipped inside
scikit-learn) becomes a sequence of 8 row tokens. Two Transformer encoder blocks
and an attention-pooling head classify it. The held-out test split is never seen in
training; its accuracy is printed beside two baselines computed in the same run:
the majority class and a logistic regression on the raw pixels.

    python -m recipes.quickstart            # about a minute on a 2-core CPU
    python -m recipes.quickstart --epochs=3 # a quick look
"""

import argparse
import json

import keras
import numpy as np


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train, valid, test = load_digit_splits(args.seed)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(*train, validation_data=valid, epochs=args.epochs, batch_size=64, verbose=2)
    _, accuracy = model.evaluate(*test, verbose=0)
    results = {"test_accuracy": float(accuracy), **baselines(train, test),
               "train_size": len(train[0]), "test_size": len(test[0])}
    print("\nDigits test split (never seen in training)")
    print(f"  {'model':<24} accuracy")
    for name in ("test_accuracy", "logistic_regression", "majority_class"):
        label = "attention classifier" if name == "test_accuracy" else name.replace("_", " ")
        print(f"  {label:<24} {results[name]:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
