"""Our MultiHeadAttention against keras.layers.MultiHeadAttention, same weights.

Times forward and forward+backward (gradients of the input and every weight) with
and without XLA at N = 256, 1024, 4096, batch 1 and 4, 4 heads of 64, float32, and
writes medians and ratios (ours / Keras; below 1 means faster) to BENCHMARKS.md.
Then times both layers with `sliding_window=256` at N = 16384 (causal, forward, XLA):
Keras builds the full `(T, S)` mask, ours runs the band kernel; `--window_length=0`
skips it.
TensorFlow backend.

    python -m benchmarks.bench_multi_head_attention [--repeats=5] [--lengths=256,1024,4096]
        [--window=256] [--window_length=16384]
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import machine_line, markdown_table, time_alternating, write_section  # noqa: E402
from keras_attention.layers import MultiHeadAttention  # noqa: E402

HEADS, HEAD_DIM = 4, 64


def make_step(layer, x, backward, xla):
    """A zero-argument callable running one causal forward (or forward and backward)."""
    if backward:
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, x, use_causal_mask=True)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x] + layer.trainable_variables)
    else:
        def step(x):
            return layer(x, x, use_causal_mask=True)
    fn = tf.function(step, jit_compile=xla)
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(x))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", default="256,1024,4096")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--window_length", type=int, default=16384)
    args = parser.parse_args(argv)
    features = HEADS * HEAD_DIM
    rows = []
    for n in [int(v) for v in args.lengths.split(",")]:
        for b in [int(v) for v in args.batches.split(",")]:
            x = tf.constant(np.random.default_rng(0).normal(size=(b, n, features)), tf.float32)
            ours = MultiHeadAttention(HEADS, HEAD_DIM, implementation="full")
            ref = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM)
            ours(x, x)
            ref(x, x)
            ours.set_weights(ref.get_weights())
            for xla in (False, True):
                for backward in (False, True):
                    med = time_alternating(
                        {"ours": make_step(ours, x, backward, xla),
                         "keras": make_step(ref, x, backward, xla)},
                        repeats=args.repeats,
                    )
                    ratio = med["ours"] / med["keras"]
                    rows.append([n, b, "yes" if xla else "no",
                                 "fwd+bwd" if backward else "fwd",
                                 f"{med['ours'] * 1e3:.1f}", f"{med['keras'] * 1e3:.1f}",
                                 f"{ratio:.3f}"])
                    print(rows[-1], flush=True)
    write_section("multi_head_attention", report(args, rows, None))
    if args.window_length:
        window_rows = sliding_window_rows(args.window, args.window_length, args.repeats)
        write_section("multi_head_attention", report(args, rows, window_rows))


def report(args, rows, window_rows):
    """The BENCHMARKS.md section: the ratio table, then the sliding-window rows."""
    lines = [
        "## MultiHeadAttention vs keras.layers.MultiHeadAttention",
        "",
        "Causal self-attention, 4 heads of 64, float32, same weights; median of "
        f"{args.repeats} alternating runs after a warm-up. Ratio = ours / Keras "
        "(goal: <= 1.05).",
        f"Machine: {machine_line()}.",
        "Command: `python -m benchmarks.bench_multi_head_attention`",
        "",
        markdown_table(["N", "batch", "XLA", "pass", "ours ms", "Keras ms", "ratio"], rows),
    ]
    if window_rows:
        lines += [
            "",
            f"`sliding_window={args.window}` (both layers, causal, batch 1, forward, XLA, "
            "same weights; Keras forms the full (T, S) mask, ours runs "
            "`keras_attention.ops.sliding_window_attention`). Speed-up = Keras / ours "
            "(goal: >= 15 at N = 16384).",
            "",
            markdown_table(["N", "sliding_window", "XLA", "ours ms", "Keras ms",
                            "speed-up"], window_rows),
        ]
    return "\n".join(lines)


def sliding_window_rows(window, length, repeats):
    features = HEADS * HEAD_DIM
    x = tf.constant(np.random.default_rng(0).normal(size=(1, length, features)), tf.float32)
    ours = MultiHeadAttention(HEADS, HEAD_DIM, sliding_window=window)
    ref = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM, sliding_window=window)
    ours(x[:, :8], x[:, :8])
    ref(x[:, :8], x[:, :8])
    ours.set_weights(ref.get_weights())
    # XLA only: Keras's (1, N, T, S) logits at N = 16384 take about 12 GB.
    med = time_alternating({"ours": make_step(ours, x, False, True),
                            "keras": make_step(ref, x, False, True)}, repeats=repeats)
    row = [length, window, "yes", f"{med['ours'] * 1e3:.1f}", f"{med['keras'] * 1e3:.1f}",
           f"{med['keras'] / med['ours']:.1f}x"]
    print(row, flush=True)
    return [row]


if __name__ == "__main__":
    main()
