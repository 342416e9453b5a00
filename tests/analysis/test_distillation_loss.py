import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.analysis import AttentionDistillationLoss
from tests.ops.backend_utils import output_and_grads


def _maps(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype("float32")


def _value(loss, y_true, y_pred):
    return float(ops.convert_to_numpy(loss(y_true, y_pred)))


@pytest.mark.parametrize("method", ["kl", "mse"])
def test_zero_for_identical_maps_and_positive_otherwise(method):
    loss = AttentionDistillationLoss(method=method)
    teacher, student = _maps((2, 4, 5, 5), 0), _maps((2, 4, 5, 5), 1)
    assert abs(_value(loss, teacher, teacher)) < 1e-6
    assert _value(loss, teacher, student) > 1e-3


def test_hand_computed_row():
    teacher = np.array([[[[0.5, 0.5]]]], "float32")
    student = np.array([[[[0.25, 0.75]]]], "float32")
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.143841...
    assert _value(AttentionDistillationLoss(), teacher, student) == pytest.approx(kl, rel=1e-5)
    assert _value(AttentionDistillationLoss("mse"), teacher, student) == pytest.approx(0.0625)


def test_masked_teacher_rows_contribute_zero():
    teacher = np.array([[[[0.5, 0.5], [0.0, 0.0]]]], "float32")  # row 1 masked
    student = np.array([[[[0.25, 0.75], [0.9, 0.1]]]], "float32")
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert _value(AttentionDistillationLoss(), teacher, student) == pytest.approx(kl, rel=1e-5)


def test_head_groups_are_averaged_when_counts_divide():
    teacher, student = _maps((2, 4, 3, 3), 0), _maps((2, 2, 3, 3), 1)
    grouped = teacher.reshape(2, 2, 2, 3, 3).mean(axis=2)
    loss = AttentionDistillationLoss()
    assert _value(loss, teacher, student) == pytest.approx(_value(loss, grouped, student),
                                                           rel=1e-5)
    assert _value(loss, grouped, student) > 0


def test_head_averages_when_counts_do_not_divide():
    teacher, student = _maps((2, 3, 3, 3), 0), _maps((2, 2, 3, 3), 1)
    loss = AttentionDistillationLoss("mse")
    expected = _value(loss, teacher.mean(1, keepdims=True), student.mean(1, keepdims=True))
    assert _value(loss, teacher, student) == pytest.approx(expected, rel=1e-5)


def test_uniform_layer_mapping():
    teachers = [_maps((2, 2, 3, 3), seed) for seed in range(4)]
    students = [_maps((2, 2, 3, 3), seed) for seed in (10, 11)]
    loss = AttentionDistillationLoss()
    # Student layer 0 -> teacher layer 1, student layer 1 -> teacher layer 3.
    expected = (_value(loss, teachers[1], students[0])
                + _value(loss, teachers[3], students[1])) / 2
    assert _value(loss, teachers, students) == pytest.approx(expected, rel=1e-5)
    # Equal maps at the mapped layers give zero whatever the other teacher layers hold.
    assert abs(_value(loss, teachers, [teachers[1], teachers[3]])) < 1e-6


def test_gradient_wrt_student_is_finite():
    teacher = _maps((2, 4, 5, 5), 0)
    teacher[0, :, -1] = 0.0  # a masked row
    student_logits = np.random.default_rng(1).normal(size=(2, 2, 5, 5)).astype("float32")
    loss = AttentionDistillationLoss()

    def fn(logits):
        return loss(teacher, ops.softmax(logits, axis=-1))

    value, (grad,) = output_and_grads(fn, [student_logits], np.float32(1.0))
    assert np.isfinite(value) and value > 0
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_config_round_trip_and_registration():
    loss = AttentionDistillationLoss(method="mse", epsilon=1e-6, reduction="sum")
    config = loss.get_config()
    assert config["method"] == "mse" and config["epsilon"] == 1e-6
    restored = AttentionDistillationLoss.from_config(config)
    assert restored.method == "mse" and restored.reduction == "sum"
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == "keras_attention>AttentionDistillationLoss"
    again = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(again, AttentionDistillationLoss) and again.epsilon == 1e-6


def test_errors():
    with pytest.raises(ValueError, match="method"):
        AttentionDistillationLoss(method="js")
    with pytest.raises(ValueError, match="epsilon"):
        AttentionDistillationLoss(epsilon=0.0)
    loss = AttentionDistillationLoss()
    with pytest.raises(ValueError, match="rank 4"):
        loss(np.ones((2, 3, 3), "float32"), np.ones((2, 3, 3), "float32"))
    with pytest.raises(ValueError, match="same batch"):
        loss(_maps((2, 2, 3, 3), 0), _maps((2, 2, 4, 4), 1))
    with pytest.raises(ValueError, match="empty"):
        loss([], [])
