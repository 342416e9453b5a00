"""Masked attention runs on TensorFlow's oneDNN CPU kernels without their error lines.

The first boolean (or integer) transpose of a process on those kernels logs
"oneDNN supports DT_BOOL only on platforms with AVX-512 ..." (a user script saw it
from the README model). The script below runs the mask paths that transposed masks
or indices, eagerly and as graphs, in a fresh process with oneDNN on, and the test
reads its stderr.
"""

import os
import pathlib
import subprocess
import sys

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]

_SCRIPT = r"""
import keras
import numpy as np
import tensorflow as tf

from keras_attention import layers

rng = np.random.default_rng(0)
x = rng.normal(size=(2, 9, 8)).astype("float32")
mask = np.ones((2, 9), bool)
mask[0, 6:] = False
pairs = mask[:, :, None] & mask[:, None, :]
calls = [
    (layers.MultiHeadAttention(num_heads=2, key_dim=4), dict(query_mask=mask, value_mask=mask)),
    (layers.LocalAttention(num_heads=2, key_dim=4, window_size=2), dict(value_mask=mask)),
    (layers.GlobalLocalAttention(num_heads=2, key_dim=4, window_size=1, num_global_tokens=1),
     dict(attention_mask=pairs)),
    (layers.CrossModalAttention(num_heads=2, key_dim=4),
     dict(query_mask=mask, value_mask=mask, use_causal_mask=True, return_both=True)),
    (layers.LSHAttention(num_heads=2, key_dim=4, bucket_size=2),
     dict(query_mask=mask)),
]
for layer, kwargs in calls:
    layer(x, x, **kwargs)
    tf.function(lambda x, layer=layer, kwargs=kwargs: layer(x, x, **kwargs))(x)

tokens = keras.Input(shape=(None,), dtype="int32")
h = keras.layers.Embedding(50, 8, mask_zero=True)(tokens)
h = h + layers.MultiHeadAttention(num_heads=2, key_dim=4)(h, h, use_causal_mask=True)
model = keras.Model(tokens, h)
model.predict(np.array([[5, 6, 7, 0, 0]]), verbose=0)
print("done")
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="TensorFlow's oneDNN kernels")
def test_masked_layers_log_no_onednn_errors():
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="0",
               KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done" in done.stdout
    assert "oneDNN supports" not in done.stderr, done.stderr[-3000:]
