import numpy as np
import pytest

from tests.zoo.forecaster.conftest import TINY_CONFIG
from zoo.forecaster.backbone import attention_model, build_backbone, model_kwargs


def _inputs(batch, channels, lookback=48, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "history": rng.normal(size=(batch, lookback, channels)).astype("float32"),
        "end_time": np.full((batch,), 1_400_000_400, "int64"),
        "time_known": np.ones((batch,), "float32"),
    }


@pytest.mark.parametrize("attention", ["full", "local", "linear"])
def test_outputs_for_each_attention(attention):
    model = build_backbone(**model_kwargs(dict(TINY_CONFIG, attention=attention), 6, 3600))
    out = model(_inputs(2, 3))
    assert tuple(out["point"].shape) == (2, 6, 3)
    assert tuple(out["quantiles"].shape) == (2, 6, 3, 3)
    assert np.all(np.isfinite(np.asarray(out["quantiles"])))


def test_channels_are_independent_and_scale_equivariant():
    model = build_backbone(**model_kwargs(TINY_CONFIG, 6, 3600))
    x = _inputs(2, 3)
    base = np.asarray(model(x)["point"])
    changed = dict(x, history=x["history"].copy())
    changed["history"][:, :, 1] *= 5.0
    out = np.asarray(model(changed)["point"])
    np.testing.assert_allclose(out[..., [0, 2]], base[..., [0, 2]], atol=1e-5)
    # Instance normalisation: an affine change of a channel's history moves its
    # forecast the same way.
    np.testing.assert_allclose(out[..., 1], 5.0 * base[..., 1], rtol=1e-3, atol=1e-3)
    single = np.asarray(model(dict(x, history=x["history"][..., 2:3]))["point"])
    np.testing.assert_allclose(single[..., 0], base[..., 2], atol=1e-5)


def test_attention_model_rows_are_distributions():
    model = build_backbone(**model_kwargs(dict(TINY_CONFIG, attention="local"), 6, 3600))
    maps = np.asarray(attention_model(model).predict(_inputs(1, 2), verbose=0))
    assert maps.shape == (2, 2, 2, 7, 7)  # (B*C, layers, heads, N, N)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    # Local attention with window_size 2: patch 0 does not attend patch 3.
    assert np.all(maps[..., 0, 3:] == 0)


def test_attention_model_refuses_linear_attention():
    model = build_backbone(**model_kwargs(dict(TINY_CONFIG, attention="linear"), 6, 3600))
    with pytest.raises(ValueError, match="Linear attention forms no attention weights"):
        attention_model(model)


def test_build_errors():
    with pytest.raises(ValueError, match="attention"):
        build_backbone(48, 6, attention="sparse")
    with pytest.raises(ValueError, match="divisible"):
        build_backbone(48, 6, hidden_dim=10, num_heads=4)
