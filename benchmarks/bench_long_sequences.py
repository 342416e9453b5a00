"""Long-sequence attention: our exact and linear-time ops and layers against Keras.

Each (method, N) point runs in its own process so that its peak resident memory
is its own. Forward pass, batch 1, 4 heads of 64, float32, XLA. Our ops are
compared with `keras.ops.dot_product_attention`, our layers (projections included)
with `keras.layers.MultiHeadAttention`, each given the equivalent dense mask (no
mask for non-causal linear attention, which approximates full attention). For the
linear methods the table also gives the growth exponent of time between the
smallest and largest N measured.

    python -m benchmarks.bench_long_sequences [--lengths=4096,16384] [--methods=...]
"""

import argparse
import json
import math
import os
import subprocess
import sys

from benchmarks.common import machine_line, markdown_table, write_section

HEADS, HEAD_DIM = 4, 64

# name -> (description, code defining `fn()` from q, k, v (1, N, 4, 64) or x (1, N, 256),
# the reference it is compared with). Ops are compared with
# `keras.ops.dot_product_attention`, layers (with their projections) with
# `keras.layers.MultiHeadAttention`, each given the equivalent dense mask.
METHODS = {
    "keras_causal": ("keras.ops.dot_product_attention, causal",
                     "fn = lambda: keras.ops.dot_product_attention(q, k, v, is_causal=True)",
                     None),
    "chunked_causal": ("chunked_attention, causal",
                       "fn = lambda: ka_ops.chunked_attention(q, k, v, causal=True)",
                       "keras_causal"),
    "keras_band256": ("keras.ops.dot_product_attention, band mask w=256",
                      "band = masks.sliding_window_mask(n, 256)[None, None]\n"
                      "fn = lambda: keras.ops.dot_product_attention(q, k, v, mask=band)", None),
    "sliding256": ("sliding_window_attention, w=256",
                   "fn = lambda: ka_ops.sliding_window_attention(q, k, v, window_size=256)",
                   "keras_band256"),
    "keras_full": ("keras.ops.dot_product_attention, no mask",
                   "fn = lambda: keras.ops.dot_product_attention(q, k, v)", None),
    "linear_elu": ("linear_attention, elu",
                   "fn = lambda: ka_ops.linear_attention(q, k, v)", "keras_full"),
    "linear_elu_causal": ("linear_attention, elu, causal",
                          "fn = lambda: ka_ops.linear_attention(q, k, v, causal=True)",
                          "keras_causal"),
    "keras_mha_causal": ("keras.layers.MultiHeadAttention, causal mask",
                         "layer = keras.layers.MultiHeadAttention(4, 64)\n"
                         "fn = lambda: layer(x, x, use_causal_mask=True)", None),
    "mha_auto_causal": ("MultiHeadAttention (auto: chunked), causal",
                        "layer = L.MultiHeadAttention(4, 64)\n"
                        "fn = lambda: layer(x, x, use_causal_mask=True)", "keras_mha_causal"),
    "keras_mha_band256": ("keras.layers.MultiHeadAttention, band mask w=256",
                          "layer = keras.layers.MultiHeadAttention(4, 64)\n"
                          "band = masks.sliding_window_mask(n, 256)[None]\n"
                          "fn = lambda: layer(x, x, attention_mask=band)", None),
    "local256": ("LocalAttention(window_size=256)",
                 "layer = L.LocalAttention(4, 64, window_size=256)\nfn = lambda: layer(x, x)",
                 "keras_mha_band256"),
    "keras_mha_full": ("keras.layers.MultiHeadAttention, no mask",
                       "layer = keras.layers.MultiHeadAttention(4, 64)\n"
                       "fn = lambda: layer(x, x)", None),
    "linear_layer": ("LinearAttention('elu')",
                     "layer = L.LinearAttention(4, 64)\nfn = lambda: layer(x, x)",
                     "keras_mha_full"),
}


def _child(method, n, repeats):
    """Run one point; print JSON with the median seconds and peak RSS."""
    import resource
    import statistics
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_attention import layers as L
    from keras_attention import masks, ops as ka_ops

    rng = np.random.default_rng(0)
    q, k, v = (tf.constant(rng.normal(size=(1, n, HEADS, HEAD_DIM)), tf.float32)
               for _ in range(3))
    x = tf.constant(rng.normal(size=(1, n, HEADS * HEAD_DIM)), tf.float32)
    scope = {"keras": keras, "L": L, "masks": masks, "ka_ops": ka_ops, "q": q, "k": k,
             "v": v, "x": x, "n": n}
    exec(METHODS[method][1], scope)  # noqa: S102  (fixed strings above)
    compiled = tf.function(scope["fn"], jit_compile=True)
    compiled().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled().numpy()
        times.append(time.perf_counter() - start)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": statistics.median(times), "peak_gb": rss_gb}))


def fitted_exponent(lengths, seconds):
    """Least-squares slope of log(time) against log(N)."""
    xs = [math.log(n) for n in lengths]
    ys = [math.log(t) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def run_point(method, n, repeats):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_long_sequences", "--child", method, str(n),
         str(repeats)], capture_output=True, text=True,
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--section", default="long_sequences",
                        help="BENCHMARKS.md section to write (one per run)")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    rows = []
    results = {}
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = args.methods.split(",")
    for n in lengths:
        for method in methods:
            r = run_point(method, n, args.repeats)
            results[(method, n)] = r
            reference = METHODS[method][2]
            ref = results.get((reference, n)) if reference else None
            speedup = f"{ref['seconds'] / r['seconds']:.1f}x" if r and ref else "-"
            rows.append([METHODS[method][0], n,
                         f"{r['seconds'] * 1e3:.0f}" if r else "failed",
                         f"{r['peak_gb']:.2f}" if r else "-",
                         METHODS[reference][0] if reference else "-", speedup])
            print(rows[-1], flush=True)
    growth = []
    for method in methods:
        if not method.startswith("linear"):
            continue
        done = [n for n in lengths if results.get((method, n))]
        if len(done) >= 2:
            lo, hi = done[0], done[-1]
            exponent = math.log(results[(method, hi)]["seconds"]
                                / results[(method, lo)]["seconds"]) / math.log(hi / lo)
            line = (f"- {METHODS[method][0]}: time grows as N^{exponent:.2f} "
                    f"from N={lo} to N={hi}")
            if len(done) > 2:
                slope = fitted_exponent(done, [results[(method, n)]["seconds"] for n in done])
                line += f" (least-squares slope over all {len(done)} lengths: {slope:.2f})"
            growth.append(line + ".")
    body = "\n".join([
        f"## Long sequences (forward), N = {args.lengths}",
        "",
        "Batch 1, 4 heads of 64, float32, XLA, median of "
        f"{args.repeats} runs; each point in a fresh process, peak RSS of that process "
        "(includes about 1 GB of TensorFlow itself). Speed-up = reference time / ours, "
        "same run; ops against `keras.ops.dot_product_attention`, layers (projections "
        "included) against `keras.layers.MultiHeadAttention`, each with the equivalent "
        "dense mask.",
        f"Machine: {machine_line()}.",
        "Command: `python -m benchmarks.bench_long_sequences "
        f"--lengths={args.lengths} --methods={args.methods} --repeats={args.repeats} "
        f"--section={args.section}`",
        "",
        markdown_table(["method", "N", "ms", "peak GB", "reference", "speed-up"], rows),
        "",
        *growth,
    ])
    write_section(args.section, body)


if __name__ == "__main__":
    main()
