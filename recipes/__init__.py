"""Training recipes: one command each, `python -m recipes.<name>`.

Recipes start quiet: TensorFlow's C++ log lines are hidden (`TF_CPP_MIN_LOG_LEVEL`
defaults to 3, see `zoo._quiet`). Run with `TF_CPP_MIN_LOG_LEVEL=0` to see them;
the `--verbose` key sets Keras's progress-bar verbosity, not these logs.
"""

from zoo import _quiet

_quiet.quiet_start()
# Importing keras_attention before anything else imports TensorFlow applies its oneDNN
# guard (keras_attention/_onednn.py): oneDNN's CPU kernels stay on except on the CPUs
# where they corrupted the heap. Set TF_ENABLE_ONEDNN_OPTS to choose yourself.
import keras_attention  # noqa: E402,F401
