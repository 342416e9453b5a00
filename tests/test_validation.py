"""The argument checks shared by ops and layers (`keras_attention.utils.validation`)."""

import numpy as np
import pytest
from keras import ops

from keras_attention.utils.validation import check_call_inputs, check_not_text


@pytest.mark.parametrize("array", [np.full((2, 3), "a"), np.full((2, 3), b"a"),
                                   np.array([None, 1.0], dtype=object)],
                         ids=["str", "bytes", "object"])
def test_check_not_text_refuses_text_and_objects_naming_the_argument(array):
    with pytest.raises(TypeError, match=r"`query` must be a floating-point tensor.*dtype="):
        check_not_text("query", array)


@pytest.mark.parametrize("value", [np.zeros((2, 3), "float32"), np.zeros(3, "int32"),
                                   np.ones(3, bool), ops.zeros((2, 3)), 1.0, None, [1.0]],
                         ids=["float", "int", "bool", "tensor", "scalar", "none", "list"])
def test_check_not_text_accepts_numbers_tensors_and_non_arrays(value):
    check_not_text("query", value)


def _call(query, value, key=None, query_mask=None):
    return query


def test_check_call_inputs_names_positional_and_keyword_arguments():
    x, text = np.zeros((2, 3), "float32"), np.full((2, 3), "a")
    check_call_inputs(_call, (x, x), {"key": x, "query_mask": np.ones((2, 3), bool)})
    with pytest.raises(TypeError, match="`query`"):
        check_call_inputs(_call, (text, x), {})
    with pytest.raises(TypeError, match="`value`"):
        check_call_inputs(_call, (x, text), {})
    with pytest.raises(TypeError, match="`key`"):
        check_call_inputs(_call, (x, x), {"key": text})
    with pytest.raises(TypeError, match="`argument 4`"):
        check_call_inputs(_call, (x, x, x, x, text), {})
