"""Attention-map distillation loss (teacher -> student).

Shape legend: B batch, N heads (N_t teacher, N_s student), T query length, S key length.
"""

import math

import keras
from keras import ops

from keras_attention.utils.validation import check_choice

METHODS = ("kl", "mse")


@keras.saving.register_keras_serializable(package="keras_attention")
class AttentionDistillationLoss(keras.losses.Loss):
    """Distance between a teacher's and a student's attention maps, for distillation.

    Transfers attention the way MiniLM (Wang et al. 2020) and TinyBERT (Jiao et al.
    2020) do: `"kl"` gives `KL(teacher || student)` of each query row,
    `sum_j t_j * (log t_j - log s_j)`; `"mse"` the mean squared difference of each
    row. Query rows whose teacher weights are all zero (masked queries) contribute
    zero and are left out of the average. The per-sample loss is the average over
    heads and the remaining rows (and over layers for lists). Written with
    `keras.ops`, so it is differentiable on every backend.

    Heads: when the teacher has `N_t` heads and the student `N_s`, equal counts are
    compared head by head; if `N_t` is a multiple of `N_s`, each student head h is
    compared with the mean of teacher heads `h * g .. h * g + g - 1`
    (`g = N_t // N_s`); otherwise the head-averaged maps are compared.

    Layers: `y_true` and `y_pred` may be lists of per-layer maps (first layer
    first). With `L_t` teacher and `L_s` student layers, student layer i
    (0-based) is compared with teacher layer `ceil((i + 1) * L_t / L_s) - 1`: a
    uniform mapping that pairs the last layers (student layer i with teacher layer
    `(i + 1) * k - 1` when `L_t = k * L_s`).

    Args:
        method: `"kl"` (default) or `"mse"`.
        epsilon: floor of the student weights inside the logarithm.
        name, reduction, dtype: as for every `keras.losses.Loss`.

    Call arguments:
        y_true: teacher weights `(B, N_t, T, S)`, or a list of them.
        y_pred: student weights `(B, N_s, T, S)`, or a list of them.
        sample_weight: optional `(B,)` weights.

    Returns:
        The reduced loss (a scalar with the default reduction).

    Example:

    >>> loss = AttentionDistillationLoss()
    >>> loss(teacher_scores, student_scores)  # (2, 8, 16, 16) and (2, 4, 16, 16)
    """

    def __init__(self, method="kl", epsilon=1e-8, name="attention_distillation",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.method = check_choice("method", method, METHODS)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (
            0 < epsilon < 1
        ):
            raise ValueError(f"`epsilon` must be a float in (0, 1). Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        teachers = _as_list("y_true", y_true)
        students = _as_list("y_pred", y_pred)
        per_layer = []
        for i, student in enumerate(students):
            j = math.ceil((i + 1) * len(teachers) / len(students)) - 1
            teacher, student = _match_heads(teachers[j], student, i, j)
            per_layer.append(self._map_loss(teacher, student))  # (B,)
        return ops.mean(ops.stack(per_layer, axis=0), axis=0)  # (B,)

    def _map_loss(self, teacher, student):
        """Per-sample loss `(B,)` of one pair of `(B, N, T, S)` maps."""
        if self.method == "kl":
            log_t = ops.log(ops.maximum(teacher, self.epsilon))
            log_s = ops.log(ops.maximum(student, self.epsilon))
            rows = ops.sum(teacher * (log_t - log_s), axis=-1)  # (B, N, T); 0 if t == 0
        else:
            rows = ops.mean(ops.square(teacher - student), axis=-1)  # (B, N, T)
        valid = ops.cast(ops.any(teacher > 0, axis=-1), rows.dtype)  # (B, N, T)
        total = ops.sum(rows * valid, axis=(1, 2))  # (B,)
        return total / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"method": self.method, "epsilon": self.epsilon})
        return config


def _as_list(name, maps):
    """One map or a list of maps as a non-empty list of rank-4 tensors."""
    maps = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    if not maps:
        raise ValueError(f"`{name}` must not be an empty list. Received: {name}=[]")
    for i, m in enumerate(maps):
        if len(m.shape) != 4:
            raise ValueError(
                f"`{name}` maps must have rank 4 (batch, heads, query_len, key_len). "
                f"Received: {name}[{i}] with shape={tuple(m.shape)}"
            )
    return maps


def _match_heads(teacher, student, student_index, teacher_index):
    """The teacher and student maps with the same number of heads."""
    t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
    if any(a is not None and b is not None and a != b
           for a, b in ((t_shape[0], s_shape[0]), (t_shape[2], s_shape[2]),
                        (t_shape[3], s_shape[3]))):
        raise ValueError(
            "Teacher and student maps must have the same batch, query and key lengths. "
            f"Received: y_true[{teacher_index}] with shape={t_shape}, "
            f"y_pred[{student_index}] with shape={s_shape}"
        )
    n_t, n_s = t_shape[1], s_shape[1]
    if n_t == n_s:
        return teacher, student
    if n_t % n_s == 0:
        g = n_t // n_s
        b, _, t, s = ops.shape(teacher)
        grouped = ops.reshape(teacher, (b, n_s, g, t, s))  # (B, N_s, g, T, S)
        return ops.mean(grouped, axis=2), student
    return ops.mean(teacher, axis=1, keepdims=True), ops.mean(student, axis=1, keepdims=True)
