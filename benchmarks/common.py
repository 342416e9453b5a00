"""Timing and reporting shared by the benchmark scripts.

Each script times our layers against `keras.layers.MultiHeadAttention` (and
`keras.ops.dot_product_attention`) in the same run, alternating the contenders
repetition by repetition so that machine noise hits both alike, and writes its
table into its own section of BENCHMARKS.md.
"""

import os
import platform
import re
import statistics
import time

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "BENCHMARKS.md")


def time_alternating(fns, repeats=5, warmup=1):
    """Median seconds of each zero-argument callable, run in alternation."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def machine_line():
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, Keras {keras.__version__}, backend "
            f"{keras.backend.backend()}")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name, body):
    """Replace (or append) the section between this script's markers in BENCHMARKS.md."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = open(REPORT).read() if os.path.exists(REPORT) else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    with open(REPORT, "w") as f:
        f.write(text)
