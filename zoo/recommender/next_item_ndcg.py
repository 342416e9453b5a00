"""A Keras metric: NDCG@k of the next item at the last position, over all items."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_attention")
class NextItemNDCG(keras.metrics.Metric):
    """NDCG@k of the target at the last position, ranked against every item.

    Used to pick the best epoch on the validation examples of
    `data.last_item_examples`, whose only target is at the last position. Rows
    whose last target is 0 (padding) are skipped. Unlike the final evaluation
    (`metrics.evaluate_scores`) the user's history is not removed from the
    ranking and ties count in the target's favour, so the value is a slightly
    different, cheaper estimate.

    Args:
        k: the cutoff.
        name, dtype: base metric arguments.

    Example:

    >>> metric = NextItemNDCG(k=10)
    >>> metric.update_state([[0, 2]], [[[0, 0, 0], [0.1, 0.2, 0.9]]])
    >>> float(metric.result())   # target ranked 1st
    1.0
    """

    def __init__(self, k=10, name=None, dtype=None):
        super().__init__(name=name or f"ndcg_at_{k}", dtype=dtype)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
        self.k = k
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        target = ops.cast(y_true[:, -1], "int32")  # (B,)
        logits = ops.cast(y_pred[:, -1, :], "float32")  # (B, V)
        target_logit = ops.take_along_axis(logits, target[:, None], axis=1)  # (B, 1)
        rank = ops.sum(ops.cast(logits > target_logit, "float32"), axis=1)  # (B,)
        gain = ops.where(rank < self.k, 1.0 / (ops.log(rank + 2.0) / ops.log(2.0)), 0.0)
        valid = ops.cast(target > 0, "float32")
        self.total.assign_add(ops.sum(gain * valid))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
