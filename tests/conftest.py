import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Same default as the recipes (see recipes/__init__.py): TensorFlow's oneDNN CPU
# kernels intermittently corrupt the heap during training; subprocesses inherit this.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with the float32 policy, a fixed seed and a clear session."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


def _zoo_snapshot():
    from zoo import checkpoint

    root = checkpoint.zoo_roots()[0]
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


def pytest_sessionstart(session):
    session.config._zoo_snapshot = _zoo_snapshot()


def pytest_sessionfinish(session, exitstatus):
    """No test may write into the shipped zoo checkpoints: the run fails if one did."""
    before = getattr(session.config, "_zoo_snapshot", None)
    if before is None:
        return
    after = _zoo_snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        print(f"\nerror: the test run changed shipped zoo checkpoint files: {changed}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
