import numpy as np
import pytest

from tests.zoo.recommender.helpers import make_recommender
from zoo.recommender.backbone import ModelConfig
from zoo.recommender.item_embedding import ItemEmbedding
from zoo.recommender.next_item_ndcg import NextItemNDCG


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"architecture": "gru"}, "architecture=.gru."),
        ({"num_items": 0}, "num_items=0"),
        ({"max_length": 2.5}, "max_length=2.5"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"hidden_dim": 10, "num_heads": 4}, "hidden_dim=10, num_heads=4"),
    ],
)
def test_model_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_model_config_round_trip():
    config = ModelConfig(architecture="bst", num_items=5, user_feature_sizes=(3, 2))
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown model config keys"):
        ModelConfig.from_dict({**config.to_dict(), "depth": 3})


def test_item_embedding_golden():
    layer = ItemEmbedding(num_items=4, hidden_dim=2, num_features=1)
    layer.build()
    layer.embeddings.assign(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], "float32"))
    layer.feature_kernel.assign(np.array([[10, 20]], "float32"))
    layer.set_features(np.array([[0], [0], [1], [0]], "float32"))
    table = np.array([[0, 0], [1, 0], [10, 21], [1, 1]], "float32")
    np.testing.assert_allclose(layer(np.array([[2, 3]])), table[[[2, 3]]])
    h = np.array([[[1.0, 2.0]]], "float32")
    np.testing.assert_allclose(layer(h, reverse=True), h @ table.T)
    with pytest.raises(ValueError, match=r"shape \(4, 1\)"):
        layer.set_features(np.zeros((3, 1)))
    plain = ItemEmbedding(num_items=4, hidden_dim=2)
    with pytest.raises(ValueError, match="must have shape"):
        plain.set_features(np.zeros((4, 1)))
    clone = ItemEmbedding.from_config(layer.get_config())
    assert clone.num_features == 1 and clone.num_items == 4


def test_item_embedding_argument_errors():
    with pytest.raises(ValueError, match="num_items"):
        ItemEmbedding(num_items=0, hidden_dim=2)
    with pytest.raises(TypeError, match="hidden_dim"):
        ItemEmbedding(num_items=3, hidden_dim="2")


@pytest.mark.parametrize("architecture", ["sasrec", "bst"])
def test_models_share_layers_and_are_causal(architecture):
    recommender = make_recommender(architecture)
    models = recommender.models
    inputs = {"history": np.array([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 1, 2]], "int32")}
    if architecture == "bst":
        inputs["user_features"] = np.array([[1, 2], [0, 0]], "int32")
    logits = np.asarray(models["training"](inputs))
    assert logits.shape == (2, 6, 31)
    last = np.asarray(models["scoring"](inputs))
    np.testing.assert_allclose(last, logits[:, -1], rtol=1e-5, atol=1e-5)
    assert np.all(last[:, 0] < last[:, 1:].min(axis=1))  # padding is never first
    changed = {**inputs, "history": inputs["history"].copy()}
    changed["history"][:, -1] = 9
    later = np.asarray(models["training"](changed))
    np.testing.assert_allclose(later[:, :-1], logits[:, :-1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(later[:, -1], logits[:, -1])
    weights = np.asarray(models["explaining"](inputs))  # (B, L, N, T, T)
    assert weights.shape == (2, 2, 2, 6, 6)
    np.testing.assert_allclose(weights[0, :, :, -1].sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[0, :, :, :, :2] == 0)  # padding keys
    assert np.all(np.triu(weights[0, 0, 0], k=1) == 0)  # causal
    # Every layer is in the training model, so its weights file covers the others.
    assert len(models["training"].weights) >= len(models["explaining"].weights)


def test_next_item_ndcg_golden():
    metric = NextItemNDCG(k=2)
    y_true = np.array([[5, 2], [5, 1], [0, 0]])
    y_pred = np.zeros((3, 2, 4), "float32")
    y_pred[0, -1] = [0, 0.1, 0.9, 0.3]   # target 2 ranked first
    y_pred[1, -1] = [0, 0.1, 0.9, 0.3]   # target 1 ranked third: outside k=2
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(0.5)  # padded row skipped
    y_pred[0, -1] = [0, 0.1, 0.2, 0.3]   # target 2 ranked second
    metric.reset_state()
    metric.update_state(y_true[:1], y_pred[:1])
    assert float(metric.result()) == pytest.approx(1 / np.log2(3))
    assert NextItemNDCG.from_config(metric.get_config()).k == 2
    with pytest.raises(ValueError, match="k=0"):
        NextItemNDCG(0)
