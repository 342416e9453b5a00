"""The networks of the sequential recommenders, built from keras_attention layers.

Shape legend: B batch, T history length (`max_length`), D hidden size, N heads,
L blocks, V items including the padding index 0, F user feature fields.

Two architectures share one builder:

- `"sasrec"`, SASRec (Kang & McAuley 2018, "Self-Attentive Sequential
  Recommendation"): item embeddings (scaled by sqrt(D)) plus learned positions,
  a stack of causal pre-norm Transformer encoder blocks over the user's history,
  and scores for the next item at every position from the dot product with the
  shared item embeddings. Histories are left-padded with 0, so the last position
  always holds the latest item and its output scores the next one.
- `"bst"`, a Behavior Sequence Transformer variant (Chen et al. 2019, "Behavior
  Sequence Transformer for E-commerce Recommendation in Alibaba"): the same
  sequence encoder, with item side features (e.g. genres) added to the item
  representation, and user profile features (e.g. age group, gender,
  occupation) embedded, concatenated with each position's output and mixed by an
  MLP, as BST concatenates "other features" with the Transformer output. Unlike
  the original, the candidate item is not appended to the sequence: candidates
  are scored by a dot product with their (feature-enriched) representation,
  which is what makes ranking the whole catalogue in one pass possible.

`build_models(config)` returns three Keras models sharing their layers:

- `training`: `{"history": (B, T)[, "user_features": (B, F)]}` -> next-item
  logits `(B, T, V)` at every position (trained with softmax cross-entropy over
  all items).
- `scoring`: the same inputs -> logits `(B, V)` of the last position.
- `explaining`: the same inputs -> attention weights `(B, L, N, T, T)`.
"""

import dataclasses
import math

import keras
from keras import ops

from keras_attention.layers import LearnedPositionEmbedding, TransformerEncoderBlock
from zoo.recommender.item_embedding import ItemEmbedding

ARCHITECTURES = ("sasrec", "bst")


@dataclasses.dataclass
class ModelConfig:
    """Hyperparameters of the network (stored in the checkpoint manifest).

    Attributes:
        architecture: "sasrec" or "bst".
        num_items: catalogue size, not counting the padding index 0.
        max_length: history positions T; longer histories keep their last T items.
        hidden_dim: D.
        num_blocks: Transformer blocks L.
        num_heads: attention heads N.
        intermediate_dim: feed-forward hidden size.
        dropout: dropout of embeddings, attention, residual branches and MLP.
        num_item_features: item feature columns (bst), 0 for none.
        user_feature_sizes: per user feature field, its vocabulary size including
            index 0 for "unknown" (bst); empty for none.
    """

    architecture: str = "sasrec"
    num_items: int = 1
    max_length: int = 200
    hidden_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    intermediate_dim: int = 256
    dropout: float = 0.2
    num_item_features: int = 0
    user_feature_sizes: tuple = ()

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {ARCHITECTURES}. "
                f"Received: architecture={self.architecture!r}"
            )
        for name in ("num_items", "max_length", "hidden_dim", "num_blocks", "num_heads",
                     "intermediate_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={self.dropout!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        self.user_feature_sizes = tuple(int(s) for s in self.user_feature_sizes)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["user_feature_sizes"] = list(self.user_feature_sizes)
        return out

    @classmethod
    def from_dict(cls, values):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"Unknown model config keys {unknown}. Received: {values}")
        return cls(**values)

    @property
    def uses_user_features(self):
        return self.architecture == "bst" and bool(self.user_feature_sizes)


def model_inputs(config):
    """The dict of Keras inputs of the three models."""
    inputs = {"history": keras.Input((config.max_length,), dtype="int32", name="history")}
    if config.uses_user_features:
        inputs["user_features"] = keras.Input(
            (len(config.user_feature_sizes),), dtype="int32", name="user_features")
    return inputs


class _Layers:
    """The layers of one network, created once and called by each model graph."""

    def __init__(self, config):
        c = config
        features = c.num_item_features if c.architecture == "bst" else 0
        self.items = ItemEmbedding(c.num_items + 1, c.hidden_dim, num_features=features,
                                   name="item_embedding")
        self.positions = LearnedPositionEmbedding(c.max_length, name="position_embedding")
        self.embedding_dropout = keras.layers.Dropout(c.dropout, name="embedding_dropout")
        self.blocks = [
            TransformerEncoderBlock(
                c.num_heads, c.intermediate_dim, dropout=c.dropout, norm_first=True,
                name=f"block_{i}",
            )
            for i in range(c.num_blocks)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        self.user_embeddings = []
        if c.uses_user_features:
            self.user_embeddings = [
                keras.layers.Embedding(size, c.hidden_dim, name=f"user_feature_{j}")
                for j, size in enumerate(c.user_feature_sizes)
            ]
            self.user_projection = keras.layers.Dense(c.hidden_dim, name="user_projection")
            self.mix_hidden = keras.layers.Dense(c.intermediate_dim, activation="gelu",
                                                 name="mix_hidden")
            self.mix_output = keras.layers.Dense(c.hidden_dim, name="mix_output")
            self.mix_dropout = keras.layers.Dropout(c.dropout, name="mix_dropout")
            self.mix_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="mix_norm")


def _encode(layers, config, inputs):
    """Hidden states `(B, T, D)` and per-block attention weights `(B, N, T, T)`."""
    history = inputs["history"]  # (B, T)
    padding = ops.not_equal(history, 0)  # (B, T)
    x = layers.items(history) * math.sqrt(config.hidden_dim)  # (B, T, D)
    x = x + layers.positions(x)
    x = layers.embedding_dropout(x)
    scores = []
    for block in layers.blocks:
        x, weights = block(x, padding_mask=padding, use_causal_mask=True,
                           return_attention_scores=True)  # (B, T, D), (B, N, T, T)
        scores.append(weights)
    x = layers.final_norm(x)
    if layers.user_embeddings:
        fields = inputs["user_features"]  # (B, F)
        user = ops.concatenate(
            [emb(fields[:, j]) for j, emb in enumerate(layers.user_embeddings)], axis=-1
        )  # (B, F * D)
        user = layers.user_projection(user)[:, None, :]  # (B, 1, D)
        user = ops.repeat(user, config.max_length, axis=1)  # (B, T, D)
        mixed = layers.mix_output(layers.mix_hidden(ops.concatenate([x, user], axis=-1)))
        x = layers.mix_norm(x + layers.mix_dropout(mixed))  # (B, T, D)
    return x, scores


def _mask_padding_item(logits):
    # The padding index 0 is never a recommendation.
    size = logits.shape[-1]
    penalty = ops.concatenate([ops.full((1,), -1e4), ops.zeros((size - 1,))])
    return logits + ops.cast(penalty, logits.dtype)


def build_models(config):
    """`{"training", "scoring", "explaining"}` Keras models sharing their layers."""
    layers = _Layers(config)
    inputs = model_inputs(config)
    # One graph with the weights as an extra output: a block called again with
    # another output structure would not connect in a second functional graph.
    hidden, weights = _encode(layers, config, inputs)
    logits = _mask_padding_item(layers.items(hidden, reverse=True))  # (B, T, V)
    training = keras.Model(inputs, ops.cast(logits, "float32"),
                           name=f"{config.architecture}_training")
    last = _mask_padding_item(layers.items(hidden[:, -1, :], reverse=True))  # (B, V)
    scoring = keras.Model(inputs, ops.cast(last, "float32"),
                          name=f"{config.architecture}_scoring")
    explaining = keras.Model(
        inputs, ops.stack(weights, axis=1), name=f"{config.architecture}_explaining"
    )  # (B, L, N, T, T)
    return {"training": training, "scoring": scoring, "explaining": explaining,
            "item_embedding": layers.items}
