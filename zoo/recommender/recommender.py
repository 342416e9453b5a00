"""The recommender task object: raw item ids in, top-k item ids out.

`SequentialRecommender` wraps the networks of `backbone.build_models` with the
item vocabulary (raw ids <-> indices) and, for the BST variant, the user feature
vocabulary. `load_recommender(directory, manifest)` is the zoo loader.

Example:

```python
import zoo

recommender = zoo.load("recommender_ml100k_sasrec")
ids, scores = recommender.recommend(["50", "181", "172"], k=5)
explanation = recommender.explain(["50", "181", "172"])
explanation["attention"]    # weight of each history item for the next pick
```
"""

import json
import numbers
import pathlib

import numpy as np

WEIGHTS_FILE = "model.weights.h5"
VOCABULARY_FILE = "vocabulary.json"
_UNKNOWN_POLICIES = ("error", "ignore")


def _as_id(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    raise TypeError(
        "Item ids must be strings or integers. "
        f"Received: item id {value!r} of type {type(value).__name__}"
    )


class SequentialRecommender:
    """Next-item recommendation from a user's history of item ids.

    Args:
        models: the dict returned by `backbone.build_models`, weights loaded.
        config: the `backbone.ModelConfig` of the network.
        item_ids: raw item ids; item index `i` is `item_ids[i - 1]`.
        user_features: BST only: `{field: list of values}`, the vocabulary of
            each user feature field in the order of the network's input (index 0
            of each field is "unknown").
        user_feature_buckets: `{field: boundaries}` for numeric fields that are
            bucketed (e.g. age in years -> age group); the bucket number, as a
            string, is then the field's value.
        manifest: the checkpoint manifest, kept for reference (metrics, data).
    """

    def __init__(self, models, config, item_ids, user_features=None,
                 user_feature_buckets=None, manifest=None):
        self.models = models
        self.config = config
        self.item_ids = [str(i) for i in item_ids]
        if len(self.item_ids) != config.num_items:
            raise ValueError(
                f"`item_ids` must have one id per item ({config.num_items}). "
                f"Received: {len(self.item_ids)} ids"
            )
        self.item_index = {item: i for i, item in enumerate(self.item_ids, start=1)}
        self.user_features = dict(user_features or {})
        self.user_feature_buckets = {
            k: list(v) for k, v in (user_feature_buckets or {}).items()}
        self.manifest = manifest or {}

    @property
    def num_items(self):
        return self.config.num_items

    @property
    def user_feature_fields(self):
        """Names of the user feature fields the model takes (empty for SASRec)."""
        return list(self.user_features) if self.config.uses_user_features else []

    # ------------------------------------------------------------ encoding
    def encode_history(self, user_history, unknown="error"):
        """Item indices of a history of raw ids, in the given (time) order.

        Args:
            user_history: a list of item ids (str or int), oldest first.
            unknown: `"error"` raises on ids not in the catalogue; `"ignore"`
                drops them.
        """
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(
                f"`unknown` must be one of {_UNKNOWN_POLICIES}. Received: unknown={unknown!r}"
            )
        if isinstance(user_history, (str, bytes)) or not hasattr(user_history, "__iter__"):
            raise TypeError(
                "`user_history` must be a list of item ids, oldest first. "
                f"Received: user_history={user_history!r}"
            )
        indices, missing = [], []
        for value in user_history:
            item = _as_id(value)
            index = self.item_index.get(item)
            if index is None:
                missing.append(item)
            else:
                indices.append(index)
        if missing and unknown == "error":
            shown = ", ".join(repr(m) for m in missing[:5])
            raise ValueError(
                f"{len(missing)} item id(s) of `user_history` are not in the catalogue of "
                f"{self.num_items} items (pass unknown='ignore' to drop them). "
                f"Received: {shown}"
            )
        if not indices:
            raise ValueError(
                "`user_history` must contain at least one known item id. "
                f"Received: user_history={list(user_history)!r}"
            )
        return np.array(indices, "int32")

    def _check_takes_user_features(self, user_features):
        """Refuses user features given to a model without user feature fields
        (SASRec), which would otherwise be ignored without a word."""
        if user_features and not self.user_feature_fields:
            raise ValueError("This model takes no user features; pass user_features=None. "
                             f"Received: user_features={user_features!r}")

    def encode_user_features(self, user_features):
        """int32 `(F,)` indices of a `{field: value}` dict.

        Missing fields, None, "" and values never seen in training map to 0,
        "unknown".
        """
        fields = self.user_feature_fields
        if user_features is None:
            return np.zeros(len(fields), "int32")
        if not isinstance(user_features, dict):
            raise TypeError(
                "`user_features` must be a dict {field: value}. "
                f"Received: user_features={user_features!r}"
            )
        extra = sorted(set(user_features) - set(fields))
        if extra:
            raise ValueError(
                f"Unknown user feature field(s) {extra}; this model takes {fields}. "
                f"Received: user_features={user_features!r}"
            )
        out = np.zeros(len(fields), "int32")
        for j, field in enumerate(fields):
            value = user_features.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # unknown
            if field in self.user_feature_buckets:
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"User feature `{field}` must be a number. Received: {field}={value!r}"
                    ) from None
                value = str(int(np.searchsorted(self.user_feature_buckets[field], number,
                                                side="right")))
            vocabulary = self.user_features[field]
            value = str(value).strip()
            out[j] = vocabulary.index(value) + 1 if value in vocabulary else 0
        return out

    def _inputs(self, histories, user_rows=None):
        from zoo.recommender.data import pad_left

        inputs = {"history": np.stack([pad_left(h, self.config.max_length) for h in histories])}
        if self.config.uses_user_features:
            if user_rows is None:
                user_rows = np.zeros((len(histories), len(self.user_feature_fields)), "int32")
            inputs["user_features"] = np.asarray(user_rows, "int32")
        return inputs

    # ------------------------------------------------------------ scoring
    def score_indices(self, histories, user_rows=None, batch_size=256):
        """Scores `(len(histories), num_items + 1)` of every item as the next one.

        Args:
            histories: lists of item indices, oldest first.
            user_rows: BST only: int `(len(histories), F)` user feature indices.
        """
        model = self.models["scoring"]
        out = []
        for start in range(0, len(histories), batch_size):
            stop = start + batch_size
            rows = None if user_rows is None else user_rows[start:stop]
            inputs = self._inputs(histories[start:stop], rows)
            out.append(np.asarray(model(inputs, training=False)))
        return np.concatenate(out).astype("float32")

    def recommend(self, user_history, k=10, user_features=None, unknown="error"):
        """The top-k next items for one user, excluding the items already seen.

        Args:
            user_history: the user's item ids (str or int), oldest first. Only
                the last `max_length` items are read by the network; every item
                of the history is excluded from the result.
            k: number of items to return.
            user_features: BST only: `{field: value}`, e.g.
                `{"age": 31, "gender": "F", "occupation": "writer"}`; missing
                fields are "unknown".
            unknown: `"error"` or `"ignore"` for ids not in the catalogue.

        Returns:
            `(item_ids, scores)`: a list of at most k raw ids (fewer only when
            fewer unseen items exist) and a float32 array of their scores, best
            first.
        """
        self._check_takes_user_features(user_features)
        ids, scores = self.recommend_batch([user_history], k,
                                           None if user_features is None else [user_features],
                                           unknown)
        return ids[0], scores[0]

    def recommend_batch(self, user_histories, k=10, user_features=None, unknown="error"):
        """`recommend` for several users: lists of ids and a list of score arrays."""
        k = self._check_k(k)
        if user_features and any(user_features):
            self._check_takes_user_features(user_features)
        histories = [self.encode_history(h, unknown) for h in user_histories]
        if user_features is not None and len(user_features) != len(histories):
            raise ValueError(
                "`user_features` must have one entry per history. "
                f"Received: {len(user_features)} for {len(histories)} histories"
            )
        rows = None
        if self.config.uses_user_features:
            rows = np.stack([
                self.encode_user_features(None if user_features is None else f)
                for f in (user_features or [None] * len(histories))
            ])
        scores = self.score_indices(histories, rows)
        ids_out, scores_out = [], []
        for row, history in zip(scores, histories):
            row[0] = -np.inf
            row[history] = -np.inf
            order = np.argsort(-row, kind="stable")[:k]
            order = order[np.isfinite(row[order])]
            ids_out.append([self.item_ids[i - 1] for i in order])
            scores_out.append(row[order].astype("float32"))
        return ids_out, scores_out

    def _check_k(self, k):
        if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)) or k < 1:
            raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
        if k > self.num_items:
            raise ValueError(
                f"`k` must be at most the number of items ({self.num_items}). Received: k={k}"
            )
        return int(k)

    # ------------------------------------------------------------ attention
    def explain(self, user_history, user_features=None, unknown="error"):
        """The attention the next-item prediction pays to each history item.

        The prediction is read from the last position; its query's attention
        weights over the history positions are returned for every block and
        head.

        Returns:
            A dict with
            - `"item_ids"`: the history items the network read (the last
              `max_length`), oldest first;
            - `"attention"`: float32 `(n,)`, the last block's weights averaged
              over heads (they sum to 1);
            - `"attention_per_block"`: float32 `(num_blocks, num_heads, n)`.
        """
        self._check_takes_user_features(user_features)
        history = self.encode_history(user_history, unknown)[-self.config.max_length:]
        rows = None
        if self.config.uses_user_features:
            rows = self.encode_user_features(user_features)[None]
        weights = np.asarray(
            self.models["explaining"](self._inputs([history], rows), training=False)
        )  # (1, L, N, T, T)
        n = len(history)
        per_block = weights[0, :, :, -1, -n:].astype("float32")  # (L, N, n)
        return {
            "item_ids": [self.item_ids[i - 1] for i in history],
            "attention": per_block[-1].mean(axis=0),
            "attention_per_block": per_block,
        }


def vocabulary_payload(item_ids, user_features=None, user_feature_buckets=None):
    """The JSON bytes of the checkpoint's vocabulary file."""
    payload = {
        "item_ids": list(item_ids),
        "user_features": user_features or {},
        "user_feature_buckets": {k: list(v) for k, v in (user_feature_buckets or {}).items()},
    }
    return (json.dumps(payload, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def network_config(manifest):
    """The `backbone.ModelConfig` stored in a manifest's config."""
    from zoo.checkpoint import CheckpointError
    from zoo.recommender.backbone import ModelConfig

    config = manifest.get("config") or {}
    network = config.get("network")
    if not isinstance(network, dict):
        raise CheckpointError(
            "The manifest has no network config (config.network). Re-create the "
            f"checkpoint with: {manifest.get('recipe', 'python -m recipes.train_recommender')}"
        )
    return ModelConfig.from_dict(network)


def load_recommender(directory, manifest):
    """Zoo loader: a `SequentialRecommender` from a verified checkpoint folder."""
    from zoo.recommender.backbone import build_models

    directory = pathlib.Path(directory)
    config = network_config(manifest)
    vocabulary = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
    models = build_models(config)
    models["training"].load_weights(str(directory / WEIGHTS_FILE))
    return SequentialRecommender(
        models, config, vocabulary["item_ids"],
        user_features=vocabulary.get("user_features"),
        user_feature_buckets=vocabulary.get("user_feature_buckets"),
        manifest=manifest,
    )
