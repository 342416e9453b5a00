import numpy as np
import pytest

import zoo
from zoo.recommender.export import export_saved_model
from zoo.serving import run_saved_model


def _python_path(recommender, histories, k, features=None):
    cleaned = [[i for i in h if i] for h in histories]
    return recommender.recommend_batch(cleaned, k=k, user_features=features, unknown="ignore")


def _check_equal(outputs, ids, scores, k):
    for row, (want_ids, want_scores) in enumerate(zip(ids, scores)):
        got_ids = outputs["item_ids"][row]
        got_scores = np.array(outputs["scores"][row], "float32")
        assert len(got_ids) == k
        assert got_ids[:len(want_ids)] == want_ids
        np.testing.assert_allclose(got_scores[:len(want_ids)], want_scores, rtol=1e-4, atol=1e-5)
        # Fewer unseen items than k: the tail is empty with score -inf.
        assert all(i == "" for i in got_ids[len(want_ids):])
        assert np.all(np.isneginf(got_scores[len(want_ids):]))


def test_export_sasrec_matches_python(tmp_path, sasrec):
    path = export_saved_model(sasrec, tmp_path / "sasrec")
    width = 28
    histories = [
        ["i3", "i7", "i1"],               # left padding
        ["i2", "", "i9", "unknown", "i4"],  # padding inside, unknown id
        [f"i{n}" for n in range(1, 8)],   # longer than max_length (6)
        ["i30"],
        [f"i{n}" for n in range(1, 29)],  # 2 unseen items left for k=5
    ]
    padded = [[""] * (width - len(h)) + h if i != 1 else h + [""] * (width - len(h))
              for i, h in enumerate(histories)]
    outputs = run_saved_model(path, {"history": padded, "k": 5})
    ids, scores = _python_path(sasrec, padded, 5)
    assert len(ids[4]) == 2
    _check_equal(outputs, ids, scores, 5)


@pytest.mark.large
def test_export_bst_matches_python(tmp_path, bst):
    path = export_saved_model(bst, tmp_path / "bst")
    histories = [["", "i3", "i7"], ["i5", "i6", "i8"], ["i2", "", ""]]
    features = [["20", "M"], ["", "F"], ["70", "X"]]
    outputs = run_saved_model(path, {"history": histories, "k": 3, "user_features": features})
    as_dicts = [{"age": a or None, "gender": g} for a, g in features]
    ids, scores = _python_path(bst, histories, 3, as_dicts)
    _check_equal(outputs, ids, scores, 3)


@pytest.mark.large
def test_export_shipped_checkpoint(tmp_path):
    recommender = zoo.load("recommender_ml100k_sasrec")
    path = export_saved_model(recommender, tmp_path / "shipped")
    histories = [["", "50", "181", "172", "174"], ["", "", "1", "2", "3"]]
    outputs = run_saved_model(path, {"history": histories, "k": 10})
    ids, scores = _python_path(recommender, histories, 10)
    _check_equal(outputs, ids, scores, 10)
