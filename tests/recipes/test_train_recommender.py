import csv
import json

import numpy as np
import pytest

import zoo
from recipes import train_recommender
from zoo import checkpoint
from zoo.recommender.recommender import load_recommender


@pytest.fixture(scope="module")
def bst_smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommender_smoke")
    argv = ["--smoke", "--model=bst", f"--workdir={root / 'work'}",
            f"--checkpoint_dir={root / 'ckpt'}"]
    assert train_recommender.main(argv) == 0
    return root, argv


def test_smoke_writes_checkpoint_and_evaluation(bst_smoke):
    root, argv = bst_smoke
    directory = root / "ckpt" / "recommender_ml100k_bst"
    manifest = checkpoint.verify_checkpoint(directory, "cmd")
    assert manifest["recipe"] == " ".join(["python -m recipes.train_recommender", *argv])
    assert manifest["name"] == "recommender_ml100k_bst" and manifest["task"] == "recommend"
    assert manifest["config"]["network"]["architecture"] == "bst"
    assert manifest["config"]["network"]["num_item_features"] == 19
    assert set(manifest["metrics"]) == {"hr@10", "ndcg@10", "hr@20", "ndcg@20"}
    assert set(manifest["baselines"]) == {"most_popular", "item_knn", "bpr_mf"}
    assert "GroupLens" in manifest["data"]["licence"]
    assert "leave-one-out" in manifest["data"]["split"]
    assert manifest["data"]["summary"]["users"] == 40
    for key in ("training_time_s", "keras_version", "backend", "created", "main_metric"):
        assert key in manifest
    assert set(manifest["files"]) == {"model.weights.h5", "vocabulary.json"}
    evaluation = json.loads((root / "work" / "evaluation.json").read_text())
    assert [row["model"] for row in evaluation["rows"]] == [
        "recommender_ml100k_bst", "most_popular", "item_knn", "bpr_mf"]


def test_smoke_checkpoint_loads(bst_smoke):
    root, _ = bst_smoke
    directory = root / "ckpt" / "recommender_ml100k_bst"
    recommender = zoo.load("recommender_ml100k_bst", directory=directory)
    assert recommender.user_feature_fields == ["age", "gender", "occupation"]
    history = recommender.item_ids[:3]
    ids, scores = recommender.recommend(
        history, k=5, user_features={"age": 30, "gender": "F", "occupation": "writer"})
    assert len(ids) == 5 and not set(ids) & set(history)
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.large
def test_csv_data(tmp_path):
    path = tmp_path / "log.csv"
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for user in range(12):
            for step, item in enumerate(rng.choice(30, size=6, replace=False)):
                writer.writerow([f"u{user}", f"p{item}", f"2024-01-{step + 1:02d}"])
    argv = ["--smoke", f"--data={path}", "--baselines=false", "--epochs=1",
            f"--workdir={tmp_path / 'w'}", f"--checkpoint_dir={tmp_path / 'c'}"]
    assert train_recommender.main(argv) == 0
    directory = tmp_path / "c" / "recommender_custom_sasrec"
    manifest = checkpoint.verify_checkpoint(directory, "cmd")
    assert manifest["data"]["source"] == "user file log.csv"
    assert manifest["data"]["summary"]["users"] == 12
    assert manifest["baselines"] == {}
    # Not a registered zoo name: the loader is called directly.
    recommender = load_recommender(directory, manifest)
    ids, _ = recommender.recommend(["p1", "p2"], k=3, unknown="ignore")
    assert len(ids) == 3 and all(i.startswith("p") for i in ids)


def test_bad_csv_row_is_reported(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nu,a,1\nu,b,later\n")
    with pytest.raises(ValueError, match="line 3: `timestamp`"):
        train_recommender.main(["--smoke", f"--data={path}", f"--workdir={tmp_path}"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model=bst", "--dataset=online-retail"], "--model=bst needs item and user features"),
        (["--dataset=csv"], "--dataset=csv needs --data"),
        (["--dataset=ml-1m"], "--dataset must be one of"),
        (["--model=gru"], "--model must be one of"),
        (["--knn_neighbors=a,b"], "--knn_neighbors expects comma-separated numbers"),
        (["--bpr_regularization="], "--bpr_regularization needs at least one value"),
        (["--hidden_dim=0"], "--hidden_dim must be positive"),
        (["--depth=3"], "Unknown config key `depth`"),
    ],
)
def test_config_errors(argv, message):
    with pytest.raises(ValueError, match=None) as info:
        train_recommender.main(argv)
    assert message in str(info.value)


def test_help(capsys):
    assert train_recommender.main(["--help"]) == 0
    assert "--max_length=50" in capsys.readouterr().out


def test_resolve_names_and_folders():
    config, name = train_recommender.resolve(train_recommender.DEFAULT)
    assert name == "recommender_ml100k_sasrec"
    assert config.workdir == "runs/recommender_ml100k_sasrec"
    smoke, name = train_recommender.resolve(train_recommender.SMOKE)
    assert smoke.workdir == "runs/recommender_ml100k_sasrec_smoke"
