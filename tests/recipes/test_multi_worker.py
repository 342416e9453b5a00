"""Recipes trained by two TensorFlow worker processes on localhost under
MultiWorkerMirroredStrategy (`--strategy=multiworker`, TF_CONFIG with free ports).

Each worker reads half of every global batch; their weights end identical, and
close to a one-process run on the same global batches (not bitwise: the all-reduce
sums the gradient in another order and Adam magnifies the difference, so the tests
allow a 10% relative difference over all weights and 0.03 of test accuracy). Only
the chief writes the workdir. A group with a killed worker, restarted, resumes from
the chief's last saved epoch. Slow (minutes each on 2 cores); .ci/run runs them with
`-m large`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.recipes.distributed_run import REPO, process_environments, run_group, start, stop

TIMEOUT = 1500
WEIGHT_TOLERANCE = 0.10  # relative difference of all weights, as one vector
ACCURACY_TOLERANCE = 0.03


def _load(out, index):
    weights = dict(np.load(os.path.join(out, f"process-{index}.npz")))
    with open(os.path.join(out, f"process-{index}.json"), encoding="utf-8") as f:
        return weights, json.load(f)


def _relative_difference(a, b):
    assert sorted(a) == sorted(b)
    num = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in a)
    den = sum(float(np.sum(b[k] ** 2)) for k in b)
    return (num / den) ** 0.5


def one_process_run(tmp_path, recipe, args, backend="tensorflow", extra_env=None):
    """The same recipe in one process (no strategy); returns its weights and record."""
    out = tmp_path / "one"
    out.mkdir()
    env = dict(process_environments(backend, 1)[0], **(extra_env or {}))
    env.pop("TF_CONFIG", None)
    for key in [k for k in env if k.startswith("KERAS_DISTRIBUTION_")]:
        env.pop(key)
    done = subprocess.run(
        [sys.executable, "-m", "tests.recipes.distributed_run", str(out), recipe, *args,
         "--strategy=none", f"--workdir={out / 'work'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return _load(out, 0)


def group_run(tmp_path, recipe, args, backend="tensorflow", name="group"):
    """The recipe in two processes; checks both finish with identical weights and
    returns the chief's weights and record."""
    out = tmp_path / name
    out.mkdir()
    codes, logs = run_group(out, recipe, [*args, "--strategy=multiworker",
                                          f"--workdir={out / 'work'}"],
                            backend, 2, TIMEOUT, str(out))
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    (chief, chief_record), (other, other_record) = _load(out, 0), _load(out, 1)
    assert chief_record["process_count"] == other_record["process_count"] == 2
    for key in chief:
        np.testing.assert_array_equal(other[key], chief[key], err_msg=key)
    return out, chief, chief_record, other_record


@pytest.mark.large
def test_two_workers_train_quickstart_like_one_process(tmp_path):
    args = ["--smoke"]
    out, weights, record, other = group_run(tmp_path, "quickstart", args)
    # Only the chief wrote the workdir: one state, one evaluation, one log folder.
    assert sorted(os.listdir(out / "work")) == ["backup", "best.weights.h5",
                                                "evaluation.json", "logs"]
    assert json.loads((out / "work" / "backup" / "state.json").read_text())["epoch"] == 3
    assert record["result"]["test_accuracy"] == other["result"]["test_accuracy"]

    single, single_record = one_process_run(tmp_path, "quickstart", args)
    assert _relative_difference(weights, single) < WEIGHT_TOLERANCE
    assert abs(record["result"]["test_accuracy"]
               - single_record["result"]["test_accuracy"]) <= ACCURACY_TOLERANCE


@pytest.mark.large
def test_two_workers_train_recommender_like_one_process(tmp_path):
    args = ["--smoke", "--baselines=false"]
    out, weights, _, _ = group_run(tmp_path, "train_recommender", args)
    checkpoints = out / "work" / "checkpoints"
    assert len(os.listdir(checkpoints)) == 1  # the chief's checkpoint and manifest
    single, _ = one_process_run(tmp_path, "train_recommender", args)
    assert _relative_difference(weights, single) < WEIGHT_TOLERANCE


@pytest.mark.large
def test_group_with_a_killed_worker_resumes_from_the_last_saved_epoch(tmp_path):
    out = tmp_path / "killed"
    out.mkdir()
    args = ["--smoke", "--epochs=5", "--strategy=multiworker", f"--workdir={out / 'work'}"]
    processes = [start(out, "quickstart", args, env, str(out / f"first-{i}.txt"))
                 for i, env in enumerate(process_environments("tensorflow", 2))]
    state_path = out / "work" / "backup" / "state.json"
    killed_after = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            if state_path.exists():
                killed_after = json.loads(state_path.read_text())["epoch"]
                if killed_after >= 2:
                    processes[1].send_signal(signal.SIGKILL)  # one worker dies
                    break
            time.sleep(0.05)
    finally:
        stop(processes)  # the chief, left waiting for its peer, is stopped too
    assert killed_after is not None and 2 <= killed_after < 5, "not killed mid-run"
    assert not [n for n in os.listdir(out / "work" / "backup") if ".tmp" in n]

    # Both restart (new ports) with the same command and resume after the saved epoch.
    codes, logs = run_group(out, "quickstart", args, "tensorflow", 2, TIMEOUT, str(out))
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    saved = json.loads(state_path.read_text())
    assert saved["epoch"] == 5
    for log in logs:
        assert "Resuming" in log and "after epoch" in log
    (chief, record), (other, other_record) = _load(out, 0), _load(out, 1)
    assert record["result"]["resumed_from_epoch"] >= killed_after
    assert other_record["result"]["resumed_from_epoch"] == record["result"]["resumed_from_epoch"]
    for key in chief:
        np.testing.assert_array_equal(other[key], chief[key], err_msg=key)
