"""Gradient checkpointing (`remat=True`) of a 6-block Transformer encoder: peak memory
and time of one training step, with and without it, and the longest sequence whose
training step fits in 24 GB each way.

The model: 6 pre-norm `TransformerEncoderBlock`s, 256 features, 4 heads of 64,
feed-forward 1024, batch 1, float32, self-attention `implementation="full"` (the
attention weights are kept for the backward pass unless rematerialised). One step:
forward, loss `mean(y ** 2)`, gradients of every weight, an SGD update, compiled
with XLA by JAX (`jax.jit`).

Two memory figures: the activations the step keeps from the forward pass for the
backward pass (`jax.ad_checkpoint.saved_residuals`, traced without compiling or
running, so the 24 GB search bisects N cheaply), which is what remat changes; and
XLA's planned peak of the compiled step (`memory_analysis()`: arguments + outputs +
temporaries, less what outputs reuse of the arguments). Step times are medians of
real runs on this machine's CPU, the two variants alternated; a step whose planned
peak exceeds `--run_limit_gb` is compiled but not run.

    KERAS_BACKEND=jax python -m benchmarks.bench_remat [--lengths=2048,8192]
        [--budget_gb=24] [--run_limit_gb=4] [--repeats=1]
"""

import argparse
import contextlib
import io
import os
import re
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import machine_line, markdown_table, write_section  # noqa: E402

BLOCKS, FEATURES, HEADS, INTERMEDIATE = 6, 256, 4, 1024
GB = 1e9


def build_encoder(length, remat):
    from keras_attention.layers import MultiHeadAttention, TransformerEncoderBlock

    inputs = keras.Input((length, FEATURES), batch_size=1)
    x = inputs
    for i in range(BLOCKS):
        attention = MultiHeadAttention(HEADS, FEATURES // HEADS, implementation="full")
        x = TransformerEncoderBlock(HEADS, INTERMEDIATE, attention=attention, remat=remat,
                                    name=f"block_{i}")(x)
    return keras.Model(inputs, x)


def compiled_step(length, remat):
    """`(compiled step, its arguments)` of one SGD training step at `length`."""
    model = build_encoder(length, remat)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = jax.random.normal(jax.random.key(0), (1, length, FEATURES), "float32")

    def loss_fn(trainable, non_trainable, x):
        y, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return keras.ops.mean(y ** 2), non_trainable

    def step(trainable, non_trainable, x):
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, x)
        trainable = [w - 0.01 * g for w, g in zip(trainable, grads)]
        return loss, trainable, non_trainable

    args = (trainable, non_trainable, x)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile()
    return compiled, args


_RESIDUAL = re.compile(r"^([a-z]+)(\d*)\[([\d,]*)\] (.*)$")


def kept_bytes(length, remat):
    """Bytes of the values the step keeps from the forward pass for the backward
    pass, as `jax.ad_checkpoint.print_saved_residuals` lists them (traced, not
    compiled or run); weights and inputs excluded."""
    from jax.ad_checkpoint import print_saved_residuals

    model = build_encoder(length, remat)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = jax.ShapeDtypeStruct((1, length, FEATURES), "float32")

    def loss(trainable, x):
        y, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return keras.ops.mean(y ** 2)

    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        print_saved_residuals(loss, trainable, x)
    total = 0
    for line in listing.getvalue().splitlines():
        match = _RESIDUAL.match(line.strip())
        if match and "from the argument" not in match.group(4):
            bits = int(match.group(2) or 8)  # "bool" has no width: a byte
            size = int(np.prod([int(d) for d in match.group(3).split(",") if d]))
            total += size * max(bits // 8, 1)
    return total


def peak_bytes(compiled):
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def largest_length(remat, budget, start=2048, step=512, high=1 << 17):
    """Largest multiple of `step` (below `high`) whose kept activations fit in
    `budget` bytes: doubling from `start`, then bisection."""
    low = start
    while low > step and kept_bytes(low, remat) > budget:
        low //= 2
    if kept_bytes(low, remat) > budget:
        return 0
    hi = low * 2
    while hi <= high and kept_bytes(hi, remat) <= budget:
        low, hi = hi, hi * 2
    while hi - low > step:
        mid = (low + hi) // 2 // step * step
        if kept_bytes(mid, remat) <= budget:
            low = mid
        else:
            hi = mid
    return low


def time_steps(steps, repeats):
    """Median seconds per call of each `(compiled, args)`, run in alternation."""
    state = {}
    for name, (compiled, args) in steps.items():
        copy = jax.tree_util.tree_map(lambda a: a.copy(), args)
        _, trainable, non_trainable = compiled(*copy)  # warm-up
        jax.block_until_ready(trainable)
        state[name] = (compiled, trainable, non_trainable, args[2])
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (compiled, trainable, non_trainable, x) in state.items():
            start = time.perf_counter()
            loss, trainable, non_trainable = compiled(trainable, non_trainable, x)
            jax.block_until_ready(loss)
            samples[name].append(time.perf_counter() - start)
            state[name] = (compiled, trainable, non_trainable, x)
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--budget_gb", type=float, default=24.0)
    parser.add_argument("--run_limit_gb", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no_search", action="store_true")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    rows = []
    for length in [int(n) for n in args.lengths.split(",")]:
        steps, memory = {}, {}
        for remat in (False, True):
            compiled, step_args = compiled_step(length, remat)
            memory[remat] = peak_bytes(compiled)
            if memory[remat] <= args.run_limit_gb * GB:
                steps[remat] = (compiled, step_args)
        times = time_steps(steps, args.repeats) if steps else {}
        for remat in (False, True):
            seconds = times.get(remat)
            rows.append([length, "yes" if remat else "no",
                         f"{kept_bytes(length, remat) / GB:.2f}", f"{memory[remat] / GB:.2f}",
                         f"{seconds:.1f}" if seconds is not None else "not run"])
            print(rows[-1], flush=True)
    largest = {}
    if not args.no_search:
        for remat in (False, True):
            largest[remat] = largest_length(remat, args.budget_gb * GB)
            print("largest", remat, largest[remat], flush=True)
    elapsed = time.perf_counter() - start
    body = [
        "## Gradient checkpointing (remat), 6-block encoder training step",
        "",
        "`KERAS_BACKEND=jax python -m benchmarks.bench_remat` "
        f"({elapsed / 60:.0f} min). {BLOCKS} pre-norm `TransformerEncoderBlock`s, "
        f"{FEATURES} features, {HEADS} heads, feed-forward {INTERMEDIATE}, batch 1, "
        "float32, full (dense) attention; one step = forward, `mean(y ** 2)`, "
        "gradients, SGD update, compiled by XLA. Kept for backward: the bytes of the "
        "forward values the step keeps for the backward pass "
        "(`jax.ad_checkpoint.saved_residuals`), what remat controls. XLA CPU "
        "planned peak: XLA's memory analysis of the compiled step (arguments + "
        "outputs + temporaries); XLA's CPU backend schedules the recomputation "
        "without lowering it, so on CPU remat does not lower the planned peak "
        "(an accelerator's memory-aware scheduler is what turns the smaller "
        "residual set into a smaller peak; not measured here). Step "
        f"time: median of {args.repeats} run(s) on this CPU after a warm-up, both "
        f"variants alternated (steps planned above {args.run_limit_gb:g} GB are not "
        f"run on this shared machine). {machine_line()}, jax {jax.__version__}.",
        "",
        markdown_table(["N", "remat", "kept for backward (GB)",
                        "XLA CPU planned peak (GB)", "step time (s)"], rows),
    ]
    if largest:
        body += [
            "",
            f"Longest N (multiple of 512) whose kept activations fit in "
            f"{args.budget_gb:g} GB, by doubling from 2048 then bisection (traced, "
            "not run): "
            f"{largest[False]} without remat, {largest[True]} with remat.",
        ]
    write_section("bench_remat", "\n".join(body))


if __name__ == "__main__":
    main()
