import numpy as np
import pytest

from zoo.recommender import metrics


def _discount(rank):
    return 1.0 / np.log2(rank + 2.0)


def test_expected_metrics_golden():
    out = metrics.expected_metrics(greater=[0, 3, 9, 25, 0], ties=[0, 0, 1, 0, 99])
    np.testing.assert_allclose(out["hr@10"], [1, 1, 0.5, 0, 0.1])
    np.testing.assert_allclose(out["hr@20"], [1, 1, 1, 0, 0.2])
    all_tied = sum(_discount(r) for r in range(10)) / 100
    np.testing.assert_allclose(
        out["ndcg@10"], [1.0, _discount(3), 0.5 * _discount(9), 0.0, all_tied])
    np.testing.assert_allclose(
        out["ndcg@20"][2], 0.5 * (_discount(9) + _discount(10)))


def test_rank_counts_excludes_history_and_padding():
    scores = np.array([[9.0, 0.5, 0.9, 0.5, 0.1],
                       [9.0, 0.2, 0.3, 0.4, 0.5]])
    greater, ties = metrics.rank_counts(scores, np.array([1, 2]), [[2], [4, 3]])
    # user 0: item 2 (0.9) is seen and padding is out -> no item above, item 3 tied.
    np.testing.assert_array_equal(greater, [0, 0])
    np.testing.assert_array_equal(ties, [1, 0])


def test_rank_counts_rejects_seen_target():
    with pytest.raises(ValueError, match="target item is in the user's history"):
        metrics.rank_counts(np.zeros((1, 4)), np.array([2]), [[2]])


def test_evaluate_scores_batches_and_averages():
    rows = np.array([[0, 0.1, 0.2, 0.3, 0.4],   # target 4 -> rank 0
                     [0, 0.4, 0.3, 0.2, 0.1],   # target 4 -> rank 3
                     [0, 0.1, 0.1, 0.1, 0.1]])  # target 1 of 4 tied, item 2 seen

    def score(users, histories):
        assert len(users) == len(histories) <= 2
        return rows[users]

    out = metrics.evaluate_scores(score, [[], [], [2]], np.array([4, 4, 1]), batch_size=2)
    expected = (1.0 + _discount(3) + (_discount(0) + _discount(1) + _discount(2)) / 3) / 3
    assert out["ndcg@10"] == pytest.approx(expected)
    assert out["hr@10"] == pytest.approx(1.0)
    assert set(out) == {"hr@10", "ndcg@10", "hr@20", "ndcg@20"}
