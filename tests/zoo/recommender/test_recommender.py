import numpy as np
import pytest

import zoo
from tests.zoo.recommender.helpers import ITEM_IDS, write_tiny_checkpoint
from zoo.recommender.recommender import load_recommender, network_config


def test_recommend_excludes_seen_and_sorts(sasrec):
    history = ["i3", "i7", "i1"]
    ids, scores = sasrec.recommend(history, k=5)
    assert len(ids) == 5 and scores.shape == (5,) and scores.dtype == np.float32
    assert not set(ids) & set(history)
    assert np.all(np.diff(scores) <= 0)
    full = sasrec.score_indices([sasrec.encode_history(history)])[0]
    full[[0, 3, 7, 1]] = -np.inf
    expected = np.argsort(-full, kind="stable")[:5]
    assert ids == [ITEM_IDS[i - 1] for i in expected]
    np.testing.assert_allclose(scores, full[expected], rtol=1e-6)


def test_recommend_batch_matches_single(sasrec):
    histories = [["i3", "i7"], ["i2"], ["i9", "i8", "i7", "i6", "i5", "i4", "i3", "i2"]]
    ids, scores = sasrec.recommend_batch(histories, k=4)
    for history, got_ids, got_scores in zip(histories, ids, scores):
        one_ids, one_scores = sasrec.recommend(history, k=4)
        assert got_ids == one_ids
        np.testing.assert_allclose(got_scores, one_scores, rtol=1e-5, atol=1e-6)
    # The long history is cut to max_length for the network but fully excluded.
    assert not set(ids[2]) & set(histories[2])


def test_recommend_returns_fewer_when_few_unseen(sasrec):
    ids, scores = sasrec.recommend(ITEM_IDS[:28], k=5)
    assert sorted(ids) == ["i29", "i30"] and len(scores) == 2


def test_history_errors(sasrec):
    with pytest.raises(ValueError, match=r"not in the catalogue .*Received: 'nope', '42'"):
        sasrec.recommend(["i1", "nope", 42])
    ids, _ = sasrec.recommend(["i1", "nope"], unknown="ignore")
    assert ids == sasrec.recommend(["i1"])[0]
    with pytest.raises(ValueError, match="at least one known item"):
        sasrec.recommend(["nope"], unknown="ignore")
    with pytest.raises(TypeError, match="list of item ids"):
        sasrec.recommend("i1,i2")
    with pytest.raises(TypeError, match="strings or integers"):
        sasrec.recommend([1.5])
    with pytest.raises(ValueError, match="unknown="):
        sasrec.recommend(["i1"], unknown="skip")


@pytest.mark.parametrize("k", [0, -1, True, 2.0, 31])
def test_k_errors(sasrec, k):
    with pytest.raises(ValueError, match="k="):
        sasrec.recommend(["i1"], k=k)


def test_explain(sasrec):
    history = [f"i{n}" for n in range(1, 10)]
    out = sasrec.explain(history)
    assert out["item_ids"] == history[-6:]  # max_length = 6
    assert out["attention"].shape == (6,)
    assert out["attention"].sum() == pytest.approx(1.0, rel=1e-5)
    assert out["attention_per_block"].shape == (2, 2, 6)
    np.testing.assert_allclose(out["attention_per_block"].sum(-1), 1.0, rtol=1e-5)
    short = sasrec.explain(["i4", "i5"])
    assert short["item_ids"] == ["i4", "i5"] and short["attention"].shape == (2,)


def test_bst_user_features(bst):
    assert bst.user_feature_fields == ["age", "gender"]
    # age 20 -> bucket "1" (18 <= 20 < 25) -> index 2; "M" -> index 2.
    np.testing.assert_array_equal(bst.encode_user_features({"age": 20, "gender": "M"}), [2, 2])
    np.testing.assert_array_equal(bst.encode_user_features({"gender": "X"}), [0, 0])
    np.testing.assert_array_equal(bst.encode_user_features(None), [0, 0])
    np.testing.assert_array_equal(bst.encode_user_features({"age": "", "gender": None}), [0, 0])
    with pytest.raises(ValueError, match=r"Unknown user feature field\(s\) \['zip'\]"):
        bst.encode_user_features({"zip": "1"})
    with pytest.raises(ValueError, match="`age` must be a number"):
        bst.encode_user_features({"age": "old"})
    with pytest.raises(TypeError, match="must be a dict"):
        bst.encode_user_features(["M"])
    a = bst.recommend(["i1", "i2"], k=30 - 2, user_features={"age": 20, "gender": "M"})
    b = bst.recommend(["i1", "i2"], k=30 - 2, user_features={"age": 40, "gender": "F"})
    assert not np.allclose(a[1], b[1])
    assert bst.explain(["i1", "i2"], user_features={"age": 20})["attention"].shape == (2,)
    with pytest.raises(ValueError, match="one entry per history"):
        bst.recommend_batch([["i1"], ["i2"]], user_features=[{"age": 3}])


def test_load_from_checkpoint(tmp_path, sasrec, bst):
    for name, original in (("recommender_ml100k_sasrec", sasrec), ("recommender_ml100k_bst", bst)):
        directory = write_tiny_checkpoint(tmp_path / name, original, name=name)
        loaded = zoo.load(name, directory=directory)
        features = {"age": 30, "gender": "F"} if original.user_feature_fields else None
        want = original.recommend(["i5", "i6"], k=7, user_features=features)
        got = loaded.recommend(["i5", "i6"], k=7, user_features=features)
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
        assert loaded.user_feature_buckets == original.user_feature_buckets


def test_missing_network_config(tmp_path, sasrec):
    directory = write_tiny_checkpoint(tmp_path / "c", sasrec)
    with pytest.raises(zoo.CheckpointError, match="no network config"):
        load_recommender(directory, {"config": {}, "recipe": "cmd"})
    assert network_config({"config": {"network": sasrec.config.to_dict()}}) == sasrec.config


# ---------------------------------------------------------------- shipped checkpoint


def test_shipped_movielens_checkpoint():
    recommender = zoo.load("recommender_ml100k_sasrec")
    manifest = recommender.manifest
    assert manifest["data"]["summary"]["users"] == 943
    best = max(m["ndcg@10"] for m in manifest["baselines"].values())
    assert set(manifest["baselines"]) == {"most_popular", "item_knn", "bpr_mf"}
    assert manifest["metrics"]["ndcg@10"] >= 1.3 * best
    # Star Wars, Return of the Jedi, The Empire Strikes Back, Raiders of the Lost Ark.
    history = [50, 181, 172, 174]
    ids, scores = recommender.recommend(history, k=10)
    assert len(ids) == 10 and not set(ids) & {str(h) for h in history}
    assert np.all(np.isfinite(scores)) and np.all(np.diff(scores) <= 0)
    explanation = recommender.explain(history)
    assert explanation["item_ids"] == [str(h) for h in history]
    assert explanation["attention"].sum() == pytest.approx(1.0, rel=1e-4)
