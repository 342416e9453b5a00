"""GRU encoder-decoder with additive (Bahdanau) attention: the classic baseline.

Shape legend: B batch, S source length, T target length, F hidden size, V vocabulary.
"""

import keras
from keras import ops

from keras_attention.layers import AdditiveAttention
from keras_attention.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_attention")
class GRUSeq2Seq(keras.Model):
    """Bidirectional-GRU encoder, GRU decoder and additive attention.

    The encoder is a bidirectional GRU (Bahdanau et al. 2015); the decoder GRU's
    output at each step queries the encoder states with `AdditiveAttention`, and the
    context and decoder output are combined before the tied output embedding
    (the "attentional hidden state" of Luong et al. 2015, with Bahdanau's scores).

    Args:
        vocabulary_size: V.
        hidden_dim: F, embedding and GRU width.
        dropout: dropout rate on embeddings and the attentional state.
        **kwargs: `keras.Model` arguments.

    Call arguments:
        inputs: dict with "encoder_tokens" `(B, S)` and "decoder_tokens" `(B, T)`.
        training: enables dropout.

    Returns:
        `(B, T, V)` logits.

    Example:

    >>> model = GRUSeq2Seq(vocabulary_size=100, hidden_dim=16)
    >>> model({"encoder_tokens": ops.ones((2, 5), "int32"),
    ...        "decoder_tokens": ops.ones((2, 3), "int32")}).shape
    (2, 3, 100)
    """

    def __init__(self, vocabulary_size, hidden_dim=256, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.dropout = check_rate("dropout", dropout)
        self.embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, name="token_embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.encoder = keras.layers.Bidirectional(
            keras.layers.GRU(hidden_dim, return_sequences=True, return_state=True),
            name="encoder",
        )
        self.memory_projection = keras.layers.Dense(hidden_dim, name="memory_projection")
        self.state_projection = keras.layers.Dense(
            hidden_dim, activation="tanh", name="state_projection"
        )
        self.decoder = keras.layers.GRU(
            hidden_dim, return_sequences=True, return_state=True, name="decoder"
        )
        self.attention = AdditiveAttention(hidden_dim, name="attention")
        self.combine = keras.layers.Dense(hidden_dim, activation="tanh", name="combine")
        self.output_dropout = keras.layers.Dropout(dropout)

    def encode(self, encoder_tokens, training=None):
        """Returns `(memory (B, S, F), memory_mask (B, S), initial_state (B, F))`."""
        mask = ops.not_equal(encoder_tokens, 0)  # (B, S)
        x = self.embedding_dropout(self.embedding(encoder_tokens), training=training)
        outputs, forward_state, backward_state = self.encoder(x, mask=mask, training=training)
        memory = self.memory_projection(outputs)  # (B, S, F)
        state = self.state_projection(ops.concatenate([forward_state, backward_state], -1))
        return memory, mask, state

    def decode(self, decoder_tokens, memory, memory_mask, state, training=None,
               return_attention_scores=False):
        """Returns `(logits (B, T, V), final_state)`, plus weights `(B, T, S)` if asked."""
        x = self.embedding_dropout(self.embedding(decoder_tokens), training=training)
        outputs, state = self.decoder(x, initial_state=state, training=training)
        context, weights = self.attention(
            outputs, memory, value_mask=memory_mask, return_attention_scores=True
        )
        hidden = self.combine(ops.concatenate([outputs, context], axis=-1))
        hidden = self.output_dropout(hidden, training=training)
        logits = ops.cast(self.embedding(hidden, reverse=True), "float32")
        if return_attention_scores:
            return logits, state, weights
        return logits, state

    def call(self, inputs, training=None):
        memory, mask, state = self.encode(inputs["encoder_tokens"], training=training)
        logits, _ = self.decode(inputs["decoder_tokens"], memory, mask, state,
                                training=training)
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
            }
        )
        return config
