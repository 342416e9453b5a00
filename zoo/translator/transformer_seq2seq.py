"""Transformer encoder-decoder for translation, built from keras_attention blocks.

Shape legend: B batch, S source length, T target length, F hidden size, V vocabulary,
L number of decoder layers, S_max cache length, N heads, H head size.
"""

import math

import keras
from keras import ops

from keras_attention.layers import (
    SinusoidalPositionEncoding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.utils.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerSeq2Seq(keras.Model):
    """Pre-norm Transformer encoder-decoder with tied embeddings (Vaswani et al. 2017).

    One shared embedding matrix embeds source and target tokens and, transposed, gives
    the output logits (Press & Wolf 2017). Token id 0 is padding.

    Args:
        vocabulary_size: V, size of the shared subword vocabulary.
        hidden_dim: F, model width.
        num_heads: attention heads per layer.
        intermediate_dim: feed-forward hidden size.
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        dropout: dropout rate.
        **kwargs: `keras.Model` arguments.

    Call arguments:
        inputs: dict with "encoder_tokens" `(B, S)` and "decoder_tokens" `(B, T)`
            int ids (target shifted right, starting with BOS).
        training: enables dropout.

    Returns:
        `(B, T, V)` logits.

    Example:

    >>> model = TransformerSeq2Seq(vocabulary_size=100, hidden_dim=32, num_heads=2,
    ...                            intermediate_dim=64, num_encoder_layers=1,
    ...                            num_decoder_layers=1)
    >>> logits = model({"encoder_tokens": ops.ones((2, 5), "int32"),
    ...                 "decoder_tokens": ops.ones((2, 4), "int32")})
    >>> logits.shape
    (2, 4, 100)
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim=256,
        num_heads=4,
        intermediate_dim=512,
        num_encoder_layers=3,
        num_decoder_layers=3,
        dropout=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.intermediate_dim = check_positive_int("intermediate_dim", intermediate_dim)
        self.num_encoder_layers = check_positive_int("num_encoder_layers", num_encoder_layers)
        self.num_decoder_layers = check_positive_int("num_decoder_layers", num_decoder_layers)
        self.dropout = check_rate("dropout", dropout)
        if hidden_dim % num_heads:
            raise ValueError(
                "`hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        self.embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, name="token_embedding",
            embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
        )
        self.positions = SinusoidalPositionEncoding(name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.encoder_blocks = [
            TransformerEncoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                    name=f"encoder_{i}")
            for i in range(num_encoder_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                    name=f"decoder_{i}")
            for i in range(num_decoder_layers)
        ]
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_norm")
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")

    def _embed(self, tokens, start_index=0, training=None):
        x = self.embedding(tokens) * math.sqrt(self.hidden_dim)  # (B, T, F)
        x = x + ops.cast(self.positions(x, start_index=start_index), x.dtype)
        return self.embedding_dropout(x, training=training)

    def encode(self, encoder_tokens, training=None):
        """`(B, S)` ids -> memory `(B, S, F)` and its padding mask `(B, S)`."""
        padding = ops.not_equal(encoder_tokens, 0)  # (B, S)
        x = self._embed(encoder_tokens, training=training)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=padding, training=training)
        return self.encoder_norm(x), padding

    def decode(self, decoder_tokens, memory, memory_mask, training=None,
               return_attention_scores=False):
        """Full (teacher-forced) decoding: logits `(B, T, V)`.

        With `return_attention_scores=True`, also the list of cross-attention
        weights, one `(B, N, T, S)` array per decoder layer.
        """
        padding = ops.not_equal(decoder_tokens, 0)  # (B, T)
        x = self._embed(decoder_tokens, training=training)
        cross = []
        for block in self.decoder_blocks:
            out = block(x, memory, decoder_padding_mask=padding,
                        encoder_padding_mask=memory_mask, training=training,
                        return_attention_scores=return_attention_scores)
            if return_attention_scores:
                x, _, cross_scores = out
                cross.append(cross_scores)
            else:
                x = out
        logits = self.embedding(self.decoder_norm(x), reverse=True)  # (B, T, V)
        logits = ops.cast(logits, "float32")
        return (logits, cross) if return_attention_scores else logits

    def call(self, inputs, training=None):
        memory, memory_mask = self.encode(inputs["encoder_tokens"], training=training)
        return self.decode(inputs["decoder_tokens"], memory, memory_mask, training=training)

    def init_caches(self, batch_size, max_length):
        """One empty `(B, 2, S_max, N, H)` self-attention cache per decoder layer."""
        return [
            block.init_cache(batch_size, max_length) for block in self.decoder_blocks
        ]

    def decode_step(self, tokens, memory, memory_mask, caches, index):
        """Decodes the tokens at positions `index...` using the caches.

        Args:
            tokens: `(B, T)` new ids (T = 1 when decoding token by token).
            memory, memory_mask: from `encode`.
            caches: list of L caches from `init_caches` (or a previous step).
            index: position of `tokens[:, 0]` (int or scalar tensor).

        Returns:
            `(logits (B, T, V), new_caches)`.
        """
        x = self._embed(tokens, start_index=index)
        new_caches = []
        for block, cache in zip(self.decoder_blocks, caches):
            x, cache = block(x, memory, encoder_padding_mask=memory_mask,
                             self_attention_cache=cache,
                             self_attention_cache_index=index)
            new_caches.append(cache)
        logits = self.embedding(self.decoder_norm(x), reverse=True)
        return ops.cast(logits, "float32"), new_caches

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "num_encoder_layers": self.num_encoder_layers,
                "num_decoder_layers": self.num_decoder_layers,
                "dropout": self.dropout,
            }
        )
        return config
