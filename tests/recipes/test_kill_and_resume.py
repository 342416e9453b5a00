"""A recipe killed with SIGKILL mid-training resumes from its last saved epoch."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(workdir, *extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "recipes.quickstart", "--smoke", "--epochs=6",
         "--jit_compile=false", f"--workdir={workdir}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


# Slow (25 to 50 s); .ci/run runs it with -m large.
@pytest.mark.large
def test_sigkill_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    straight = _run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads((tmp_path / "straight" / "evaluation.json").read_text())

    workdir = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "recipes.quickstart", "--smoke", "--epochs=6",
         "--jit_compile=false", f"--workdir={workdir}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    state_path = workdir / "backup" / "state.json"
    deadline = time.monotonic() + 600
    killed_after = None
    while time.monotonic() < deadline and process.poll() is None:
        if state_path.exists():
            epoch = json.loads(state_path.read_text())["epoch"]
            if epoch >= 2:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_after = epoch
                break
        time.sleep(0.05)
    assert killed_after is not None and killed_after < 6, "the run was not killed mid-training"
    assert process.returncode == -signal.SIGKILL
    # Nothing half-written is visible: only complete weight files and the state.
    names = os.listdir(workdir / "backup")
    assert not [n for n in names if ".tmp" in n], names

    resumed = _run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming {workdir} after epoch" in resumed.stdout
    result = json.loads((workdir / "evaluation.json").read_text())
    assert result["resumed_from_epoch"] >= killed_after
    assert abs(result["test_accuracy"] - expected["test_accuracy"]) <= 0.05
