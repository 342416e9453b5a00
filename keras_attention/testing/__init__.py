"""Test utilities shared by the layer tests."""

from keras_attention.testing.layer_test import (
    assert_all_close,
    assert_finite,
    check_training_step,
    run_layer_test,
)
from keras_attention.testing.attention_test import (
    check_attention_errors,
    run_attention_layer_test,
)
