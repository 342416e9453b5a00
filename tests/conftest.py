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
