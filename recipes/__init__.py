"""Training recipes: one command each, `python -m recipes.<name>`.

Recipes start quiet: TensorFlow's C++ log lines are hidden (`TF_CPP_MIN_LOG_LEVEL`
defaults to 3, see `zoo._quiet`). Run with `TF_CPP_MIN_LOG_LEVEL=0` to see them;
the `--verbose` key sets Keras's progress-bar verbosity, not these logs.
"""

import os

from zoo import _quiet

# TensorFlow 2.21's oneDNN CPU kernels corrupt the heap in about one training run in
# four here (glibc aborts "corrupted double-linked list" or a segfault inside a Keras
# train step, with or without XLA); with them off, 26 of 26 runs of the same command
# finished. Recipes therefore default to TensorFlow's own CPU kernels. The variable is
# read when TensorFlow is first imported; set TF_ENABLE_ONEDNN_OPTS=1 to opt back in.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_quiet.quiet_start()
