"""Long-sequence attention: our exact and linear-time ops against Keras.

Each (method, N) point runs in its own process so that its peak resident memory
is its own. Forward pass, batch 1, 4 heads of 64, float32, XLA; the Keras
reference is `keras.layers.MultiHeadAttention`'s core,
`keras.ops.dot_product_attention`, given the equivalent dense mask.

    python -m benchmarks.bench_long_sequences [--lengths=4096,16384] [--methods=...]
"""

import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import machine_line, markdown_table, write_section

HEADS, HEAD_DIM = 4, 64
METHODS = {
    "keras_causal": "keras.ops.dot_product_attention, causal",
    "chunked_causal": "chunked_attention, causal",
    "keras_band256": "keras.ops.dot_product_attention, band mask w=256",
    "sliding256": "sliding_window_attention, w=256",
    "linear_elu": "linear_attention, elu",
    "linear_elu_causal": "linear_attention, elu, causal",
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

    from keras_attention import masks, ops as ka_ops

    rng = np.random.default_rng(0)
    q, k, v = (tf.constant(rng.normal(size=(1, n, HEADS, HEAD_DIM)), tf.float32)
               for _ in range(3))
    if method == "keras_causal":
        fn = lambda: keras.ops.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    elif method == "chunked_causal":
        fn = lambda: ka_ops.chunked_attention(q, k, v, causal=True)  # noqa: E731
    elif method == "keras_band256":
        band = masks.sliding_window_mask(n, 256)[None, None]
        fn = lambda: keras.ops.dot_product_attention(q, k, v, mask=band)  # noqa: E731
    elif method == "sliding256":
        fn = lambda: ka_ops.sliding_window_attention(q, k, v, window_size=256)  # noqa: E731
    elif method == "linear_elu":
        fn = lambda: ka_ops.linear_attention(q, k, v)  # noqa: E731
    elif method == "linear_elu_causal":
        fn = lambda: ka_ops.linear_attention(q, k, v, causal=True)  # noqa: E731
    compiled = tf.function(fn, jit_compile=True)
    compiled().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled().numpy()
        times.append(time.perf_counter() - start)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": statistics.median(times), "peak_gb": rss_gb}))


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
    for n in [int(x) for x in args.lengths.split(",")]:
        for method in args.methods.split(","):
            r = run_point(method, n, args.repeats)
            results[(method, n)] = r
            reference = {"chunked_causal": "keras_causal", "sliding256": "keras_band256",
                         "linear_elu": "keras_band256"}.get(method)
            ref = results.get((reference, n)) if reference else None
            ratio = f"{r['seconds'] / ref['seconds']:.3f}" if r and ref else "-"
            rows.append([METHODS[method], n,
                         f"{r['seconds'] * 1e3:.0f}" if r else "failed",
                         f"{r['peak_gb']:.2f}" if r else "-", ratio])
            print(rows[-1], flush=True)
    body = "\n".join([
        "## Long sequences (forward)",
        "",
        "Batch 1, 4 heads of 64, float32, XLA, median of "
        f"{args.repeats} runs; each point in a fresh process, peak RSS of that process "
        "(includes about 1 GB of TensorFlow itself). Ratio = time / the Keras "
        "reference with the equivalent dense mask (causal for chunked, band for "
        "sliding window and linear).",
        f"Machine: {machine_line()}.",
        "Command: `python -m benchmarks.bench_long_sequences "
        f"--lengths={args.lengths} --methods={args.methods} --section={args.section}`",
        "",
        markdown_table(["method", "N", "ms", "peak GB", "ratio vs Keras"], rows),
    ])
    write_section(args.section, body)


if __name__ == "__main__":
    main()
