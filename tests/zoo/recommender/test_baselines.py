import numpy as np
import pytest

from zoo.recommender import baselines
from zoo.recommender.data import Split


def test_most_popular():
    model = baselines.MostPopular(3).fit([[1, 2], [2, 3], [2]])
    np.testing.assert_array_equal(model.scores([0, 1], [[1], [3]]), [[0, 1, 3, 1]] * 2)


def test_item_knn_golden():
    histories = [[1, 2], [1, 2], [1, 3]]
    # n1=3, n2=2, n3=1; c12=2, c13=1, c23=0; cosine without shrink.
    model = baselines.ItemKNN(3, neighbors=0, shrink=0.0).fit(histories)
    s12, s13 = 2 / np.sqrt(6), 1 / np.sqrt(3)
    np.testing.assert_allclose(model.scores([0], [[1]]), [[0, 0, s12, s13]], rtol=1e-6)
    np.testing.assert_allclose(model.scores([0], [[2, 3]]), [[0, s12 + s13, 0, 0]], rtol=1e-6)
    # One neighbour per item: item 1 keeps item 2 only.
    pruned = baselines.ItemKNN(3, neighbors=1, shrink=0.0).fit(histories)
    np.testing.assert_allclose(pruned.scores([0], [[1]]), [[0, 0, s12, 0]], rtol=1e-6)
    shrunk = baselines.ItemKNN(3, neighbors=0, shrink=1.0).fit(histories)
    assert shrunk.scores([0], [[1]])[0, 2] == pytest.approx(2 / (np.sqrt(6) + 1))


def _clusters():
    # Users 0-9 like items 1-5, users 10-19 items 6-10; each misses one item.
    histories = []
    for u in range(20):
        base = 1 if u < 10 else 6
        histories.append([base + i for i in range(5) if i != u % 5])
    return histories


def test_bpr_learns_clusters_and_is_deterministic():
    histories = _clusters()
    model = baselines.BPRMF(10, factors=8, learning_rate=0.1, epochs=40, seed=3).fit(histories)
    scores = model.scores(np.arange(20), histories)
    for u in range(20):
        own = 1 + u % 5 if u < 10 else 6 + u % 5
        other = list(range(6, 11)) if u < 10 else list(range(1, 6))
        assert scores[u, own] > scores[u, other].max()
    again = baselines.BPRMF(10, factors=8, learning_rate=0.1, epochs=40, seed=3).fit(histories)
    np.testing.assert_array_equal(again.user_factors, model.user_factors)


def test_bpr_callback_can_stop():
    epochs = []
    baselines.BPRMF(10, epochs=50).fit(_clusters(), callback=lambda e, m: epochs.append(e) or e == 3)
    assert epochs == [1, 2, 3]


def test_tune_and_evaluate():
    histories = _clusters()
    split = Split(
        train=[np.array(h[:-2], "int32") for h in histories],
        valid_targets=np.array([h[-2] for h in histories], "int32"),
        test_targets=np.array([h[-1] for h in histories], "int32"),
    )
    logged = []
    results, details = baselines.tune_and_evaluate(
        split, 10, knn_neighbors=(2, 5), bpr_regularization=(1e-3,), bpr_epochs=4,
        bpr_eval_every=2, log=logged.append)
    assert set(results) == {"most_popular", "item_knn", "bpr_mf"}
    assert details["item_knn"]["params"]["neighbors"] in (2, 5)
    assert details["bpr_mf"]["params"]["epochs"] in (2, 4)
    # Co-occurrence finds the user's cluster: the test item ranks in the top 5.
    assert results["item_knn"]["hr@10"] == 1.0
    assert len(logged) == 3
