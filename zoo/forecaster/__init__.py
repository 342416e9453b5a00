"""Time-series forecaster: a PatchTST-style Transformer built from keras_attention layers.

- `build_backbone`: the network (instance normalisation, patch tokens with
  calendar and Time2Vec features, encoder blocks with full, local or linear
  attention, point and quantile heads); `attention_model` its attention maps.
- `Forecaster`: the task object, `forecast(history)` and
  `attention_maps(history)`; `load_forecaster(directory)` loads a checkpoint.
- `data`, `baselines`, `metrics`, `export`, `cli`: readers and splits,
  seasonal naive and DLinear, metrics and the pinball loss, SavedModel export,
  the `keras-attention forecast` command.

Trained by `python -m recipes.train_forecaster`; see docs/forecaster.md.
Importing this package does not import Keras; the names below are loaded on
first use.
"""

import importlib

_EXPORTS = {
    "AttentionMaps": "zoo.forecaster.forecaster",
    "ForecastResult": "zoo.forecaster.forecaster",
    "Forecaster": "zoo.forecaster.forecaster",
    "load_forecaster": "zoo.forecaster.forecaster",
    "attention_model": "zoo.forecaster.backbone",
    "build_backbone": "zoo.forecaster.backbone",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo.forecaster' has no attribute {name!r}")
