"""Largest sequence length each attention layer runs forward+backward within a memory cap.

For every layer (4 heads of 64 over 256 features, batch 1, float32, XLA) and for
N = 2048, 4096, 8192, ... one fresh process builds the layer, runs one training
step's worth of work (forward, then gradients of `sum(y ** 2)` with respect to the
input and every weight) and reports its peak resident memory. The process runs
under a memory cap (default 21 GiB, what a 24 GB machine leaves free): the parent
polls the child's resident memory and kills it when it passes the cap. Doubling stops at the first point that
fails, or that takes longer than `--time_limit` seconds (reported as a lower bound),
or at `--max_length`. `keras.layers.MultiHeadAttention` and
`keras.ops.dot_product_attention` (causal) run in the same sweep as the reference.

    python -m benchmarks.bench_max_length [--layers=...] [--cap_gb=21] [--time_limit=300]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks.common import machine_line, markdown_table, write_section

HEADS, HEAD_DIM = 4, 64
FEATURES = HEADS * HEAD_DIM

# name -> (description, code building `fn(x)` from layers in `L` for input x (1, N, 256)).
LAYERS = {
    "keras_mha": ("keras.layers.MultiHeadAttention, causal mask",
                  "layer = keras.layers.MultiHeadAttention(4, 64)\n"
                  "fn = lambda x: layer(x, x, use_causal_mask=True)"),
    "keras_dpa": ("keras.ops.dot_product_attention, causal",
                  "fn = lambda x: keras.ops.dot_product_attention(r4(x), r4(x), r4(x), "
                  "is_causal=True)"),
    "mha_full": ("MultiHeadAttention(implementation='full'), causal",
                 "layer = L.MultiHeadAttention(4, 64, implementation='full')\n"
                 "fn = lambda x: layer(x, x, use_causal_mask=True)"),
    "mha_auto": ("MultiHeadAttention(implementation='auto') (chunked), causal",
                 "layer = L.MultiHeadAttention(4, 64)\n"
                 "fn = lambda x: layer(x, x, use_causal_mask=True)"),
    "local": ("LocalAttention(window_size=256)",
              "layer = L.LocalAttention(4, 64, window_size=256)\nfn = lambda x: layer(x, x)"),
    "sparse_strided": ("SparseAttention('strided', block_size=64), causal",
                       "layer = L.SparseAttention(4, 64, pattern='strided', block_size=64)\n"
                       "fn = lambda x: layer(x, x)"),
    "sparse_fixed": ("SparseAttention('fixed', block_size=64), causal",
                     "layer = L.SparseAttention(4, 64, pattern='fixed', block_size=64)\n"
                     "fn = lambda x: layer(x, x)"),
    "block_sparse": ("BlockSparseAttention(block_size=64)",
                     "layer = L.BlockSparseAttention(4, 64, block_size=64)\n"
                     "fn = lambda x: layer(x, x)"),
    "global_local": ("GlobalLocalAttention(window_size=256, num_global_tokens=16)",
                     "layer = L.GlobalLocalAttention(4, 64, window_size=256, "
                     "num_global_tokens=16)\nfn = lambda x: layer(x, x)"),
    "linear_elu": ("LinearAttention('elu')",
                   "layer = L.LinearAttention(4, 64)\nfn = lambda x: layer(x, x)"),
    "linear_elu_causal": ("LinearAttention('elu', causal=True)",
                          "layer = L.LinearAttention(4, 64, causal=True)\n"
                          "fn = lambda x: layer(x, x)"),
    "linear_favor": ("LinearAttention('favor+')",
                     "layer = L.LinearAttention(4, 64, feature_map='favor+', seed=0)\n"
                     "fn = lambda x: layer(x, x)"),
    "low_rank": ("LowRankAttention(projected_length=256)",
                 "layer = L.LowRankAttention(4, 64, projected_length=256, max_length=n)\n"
                 "fn = lambda x: layer(x, x)"),
    "nystrom": ("NystromAttention(num_landmarks=64)",
                "layer = L.NystromAttention(4, 64, num_landmarks=64)\nfn = lambda x: layer(x, x)"),
    "lsh": ("LSHAttention(num_hashes=2, bucket_size=64)",
            "layer = L.LSHAttention(4, 64, num_hashes=2, bucket_size=64)\n"
            "fn = lambda x: layer(x, x)"),
    "adaptive_span": ("AdaptiveSpanAttention(max_span=256), causal",
                      "layer = L.AdaptiveSpanAttention(4, 64, max_span=256, causal=True)\n"
                      "fn = lambda x: layer(x, x)"),
    "talking_heads": ("TalkingHeadsAttention",
                      "layer = L.TalkingHeadsAttention(4, 64)\nfn = lambda x: layer(x, x)"),
    "cross_modal": ("CrossModalAttention (both directions, two length-N sequences)",
                    "layer = L.CrossModalAttention(4, 64)\nfn = lambda x: layer(x, x[..., :128])"),
    "attention_pooling": ("AttentionPooling(num_heads=4)",
                          "layer = L.AttentionPooling(num_heads=4)\nfn = lambda x: layer(x)"),
    "hierarchical": ("HierarchicalAttention(units=256), sentences of 64 tokens",
                     "layer = L.HierarchicalAttention(256)\n"
                     "fn = lambda x: layer(keras.ops.reshape(x, (1, -1, 64, 256)))"),
}


def _child(name, n):
    """One point: forward + backward at length n; prints JSON with seconds and peak GB."""
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_attention import layers as L  # noqa: F401  (used by the layer code)

    def r4(x):
        return keras.ops.reshape(x, (1, -1, HEADS, HEAD_DIM))

    scope = {"keras": keras, "L": L, "r4": r4, "n": n}
    exec(LAYERS[name][1], scope)  # noqa: S102  (fixed strings above)
    fn = scope["fn"]
    x = tf.constant(np.random.default_rng(0).normal(size=(1, n, FEATURES)), tf.float32)
    fn(x[:, :128])  # build the weights
    layer = scope.get("layer")
    weights = layer.trainable_variables if layer is not None else []

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.add_n([tf.reduce_sum(tf.square(t)) for t in tf.nest.flatten(y)])
        return tape.gradient(loss, [x] + weights)

    start = time.perf_counter()
    grads = step(x)
    finite = all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads if g is not None)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb, "finite": finite}))


def _rss_gb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_point(name, n, cap_gb, time_limit):
    """(status, result): status is 'ok', 'failed' (over the cap or an error) or 'timeout'.

    The parent polls the child's resident memory and kills it once it passes
    `cap_gb` (an address-space rlimit is no substitute: TensorFlow's thread pools
    can hang instead of failing when an allocation is refused).
    """
    code = f"from benchmarks.bench_max_length import _child; _child({name!r}, {n})"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err)
        start, peak, over = time.monotonic(), 0.0, False
        while proc.poll() is None:
            peak = max(peak, _rss_gb(proc.pid))
            if peak > cap_gb:
                over = True
                proc.kill()
            elif time.monotonic() - start > time_limit:
                proc.kill()
                proc.wait()
                return "timeout", None
            time.sleep(0.05)
        if over:
            return "failed", {"error": f"resident memory passed {cap_gb:g} GiB"}
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().strip().splitlines()
            reason = lines[-1] if lines else f"killed by signal {-proc.returncode}"
            return "failed", {"error": short_reason(reason)}
        out.seek(0)
        return "ok", json.loads(out.read().strip().splitlines()[-1])


def short_reason(message):
    """XLA's out-of-memory error as "needs a 64.1 GiB buffer"; others cut to 160 chars."""
    found = re.search(r"Out of memory while trying to allocate ([0-9.]+)\s*GiB", message)
    if found:
        return f"needs a {float(found.group(1)):.1f} GiB buffer"
    return message[:160]


def sweep(name, start, max_length, cap_gb, time_limit):
    """Double N from `start`; returns a table row and the per-point log."""
    best, reason, log, n = None, f"reached --max_length={max_length}", [], start
    while n <= max_length:
        status, result = run_point(name, n, cap_gb, time_limit)
        log.append((n, status, result))
        print(name, n, status, result, flush=True)
        if status != "ok":
            reason = (f"N={n}: over {time_limit} s" if status == "timeout"
                      else f"N={n} does not fit ({result['error']})")
            break
        best = (n, result)
        n *= 2
    if best is None:
        return [LAYERS[name][0], f"< {start}", "-", "-", "-", reason], log
    n, result = best
    largest = f"{n}" if "does not fit" in reason else f">= {n}"
    return [LAYERS[name][0], largest, f"{result['seconds']:.1f}", f"{result['peak_gb']:.1f}",
            "yes" if result["finite"] else "NO", reason], log


def _merge_rows(section, rows):
    """Rows of this run, plus the rows of other layers already in the section, in
    `LAYERS` order, so that a layer can be re-measured on its own."""
    from benchmarks.common import REPORT

    order = [desc for desc, _ in LAYERS.values()]
    merged = {}
    if os.path.exists(REPORT):
        text = open(REPORT).read()
        begin, end = f"<!-- begin {section} -->", f"<!-- end {section} -->"
        if begin in text and end in text:
            for line in text.split(begin, 1)[1].split(end, 1)[0].splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if line.startswith("| ") and cells[0] in order:
                    cells[-1] = re.sub(r"\((.*Out of memory.*)\)$",
                                       lambda m: f"({short_reason(m.group(1))})", cells[-1])
                    merged[cells[0]] = cells
    merged.update({row[0]: row for row in rows})
    return [merged[desc] for desc in order if desc in merged]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--start", type=int, default=2048)
    parser.add_argument("--max_length", type=int, default=2**20)
    parser.add_argument("--cap_gb", type=float, default=21.0)
    parser.add_argument("--time_limit", type=float, default=300.0)
    parser.add_argument("--section", default="max_length")
    args = parser.parse_args(argv)
    rows = []
    for name in args.layers.split(","):
        if name not in LAYERS:
            raise SystemExit(f"unknown layer {name!r}; choose from {', '.join(LAYERS)}")
        row, _ = sweep(name, args.start, args.max_length, args.cap_gb, args.time_limit)
        rows.append(row)
    rows = _merge_rows(args.section, rows)
    body = "\n".join([
        "## Largest sequence length, forward + backward",
        "",
        f"Batch 1, 4 heads of 64 over 256 features, float32, XLA; one training step "
        f"(forward, then gradients of sum(y^2) for the input and every weight), N doubled "
        f"from {args.start}, each point in a fresh process killed if its resident memory "
        f"passes {args.cap_gb:g} GiB. 'Largest N' is the last length that ran; '>=' "
        f"when the sweep stopped on time ({args.time_limit:g} s per point) or at the "
        f"largest length tried, not on memory. Seconds and peak RSS are those of that "
        f"point (one step, compile included).",
        f"Machine: {machine_line()}.",
        "Command: `python -m benchmarks.bench_max_length "
        f"--start={args.start} --max_length={args.max_length} --cap_gb={args.cap_gb:g} "
        f"--time_limit={args.time_limit:g}` (with `--layers=name,...` it re-measures "
        "those rows and keeps the others).",
        "",
        markdown_table(["layer", "largest N", "s (step + compile)", "peak GB",
                        "gradients finite", "stopped because"], rows),
    ])
    write_section(args.section, body)


if __name__ == "__main__":
    main()
