"""Recipes trained data-parallel under JAX: over 4 virtual CPU devices in one
process (`keras.distribution.DataParallel`), and by two JAX processes on localhost
joined by `keras.distribution.initialize` (`--strategy=multiworker`, CPU
collectives over Gloo, a free port chosen at run time). Each run is compared with a
one-process, one-device run on the same global batches, with the tolerances of
tests/recipes/test_multi_worker.py (the reduction order differs, and JAX cuts each
global batch to a multiple of the device count, losing at most 3 examples a step).
Slow; .ci/run runs them with `-m large`.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.recipes.distributed_run import REPO, process_environments
from tests.recipes.test_multi_worker import (
    ACCURACY_TOLERANCE,
    TIMEOUT,
    WEIGHT_TOLERANCE,
    _load,
    _relative_difference,
    group_run,
    one_process_run,
)

ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def virtual_devices_run(tmp_path, recipe, args, devices=4):
    out = tmp_path / "devices"
    out.mkdir()
    env = dict(process_environments("jax", 1)[0],
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    for key in [k for k in env if k.startswith("KERAS_DISTRIBUTION_")]:
        env.pop(key)
    done = subprocess.run(
        [sys.executable, "-m", "tests.recipes.distributed_run", str(out), recipe, *args,
         "--strategy=mirrored", f"--workdir={out / 'work'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return _load(out, 0)


@pytest.mark.large
@pytest.mark.parametrize("recipe, args", [
    ("quickstart", ["--smoke"]),
    ("train_recommender", ["--smoke", "--baselines=false"]),
], ids=["quickstart", "recommender"])
def test_data_parallel_over_four_virtual_devices_matches_one_device(tmp_path, recipe, args):
    weights, _ = virtual_devices_run(tmp_path, recipe, args)
    single, _ = one_process_run(tmp_path, recipe, args, "jax", ONE_DEVICE)
    assert _relative_difference(weights, single) < WEIGHT_TOLERANCE


@pytest.mark.large
def test_two_jax_processes_train_quickstart_like_one_process(tmp_path):
    args = ["--smoke"]
    out, weights, record, other = group_run(tmp_path, "quickstart", args, backend="jax")
    assert sorted(os.listdir(out / "work")) == ["backup", "best.weights.h5",
                                                "evaluation.json", "logs"]
    assert record["result"]["test_accuracy"] == other["result"]["test_accuracy"]
    single, single_record = one_process_run(tmp_path, "quickstart", args, "jax", ONE_DEVICE)
    assert _relative_difference(weights, single) < WEIGHT_TOLERANCE
    assert abs(record["result"]["test_accuracy"]
               - single_record["result"]["test_accuracy"]) <= ACCURACY_TOLERANCE
    assert np.isfinite(record["result"]["test_accuracy"])
