"""Estimated training memory of the zoo models, and of the same models 10x and 100x
larger, for docs/distributed.md: parameters (with AdamW's two moments and the
gradient: 16 bytes each in float32) and activation memory per device.

Activations are estimated per Transformer block and example as
`4 bytes * (T * (8 d + 2 f) + 2 N T^2)` (the tensors a block keeps for the backward
pass: norms, q/k/v, attention output, feed-forward hidden units, and the attention
weights with their dropout mask), summed over blocks; with `--remat` a block keeps
only its input, `4 T d` bytes, plus one block's full set while it is recomputed.
Scaling by 10x and 100x multiplies the width (d and f) by sqrt(10) and 10, which
multiplies the parameters by about 10 and 100, at the same length and batch.

    python -m benchmarks.distributed_sizing
"""

import math

GIB = 2 ** 30

# name: (parameters measured in the shipped checkpoint, blocks, d, f, N, T, batch)
ZOO = {
    "translator_en_es": (5_987_328, 6, 256, 512, 4, 40, 64),
    "captioner_tuxpaint_openclipart": (4_721_359, 4, 96, 192, 4, 64, 32),
    "forecaster_electricity": (401_040, 3, 64, 128, 4, 336, 128),
    "recommender_ml100k_sasrec": (211_008, 2, 64, 256, 2, 50, 128),
}


def block_activation_bytes(t, d, f, n):
    return 4 * (t * (8 * d + 2 * f) + 2 * n * t * t)


def estimate(params, blocks, d, f, n, t, batch, scale, devices):
    width = math.sqrt(scale)
    d, f = round(d * width), round(f * width)
    params = params * scale
    per_example = blocks * block_activation_bytes(t, d, f, n)
    per_example_remat = blocks * 4 * t * d + block_activation_bytes(t, d, f, n)
    local = max(batch // devices, 1)
    return {
        "parameters": params,
        "state": 16 * params,  # weights, gradient, two AdamW moments (float32)
        "activations": per_example * local,
        "activations_remat": per_example_remat * local,
    }


def table(devices=8):
    rows = ["| model | scale | parameters | weights + grads + AdamW | activations / device "
            f"(batch / {devices}) | with remat |", "|---|---|---|---|---|---|"]
    for name, (params, blocks, d, f, n, t, batch) in ZOO.items():
        for scale in (1, 10, 100):
            e = estimate(params, blocks, d, f, n, t, batch, scale, devices)
            rows.append(
                f"| {name} (T={t}, batch {batch}) | {scale}x | {e['parameters'] / 1e6:.1f} M | "
                f"{e['state'] / GIB:.2f} GiB | {e['activations'] / GIB:.3f} GiB | "
                f"{e['activations_remat'] / GIB:.3f} GiB |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
