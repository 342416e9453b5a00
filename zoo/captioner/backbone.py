"""The captioner network: a hybrid ViT image encoder and a Transformer decoder.

Shape legend: B batch, S image side, G patch-grid side (S / patch_size),
P = G * G patches, T caption length, D hidden size, V vocabulary size.

Show, Attend and Tell (Xu et al. 2015) in Transformer form: the image becomes
a grid of patch features, and every decoder block cross-attends from the words
to the patches, so each generated word has an attention map over the image.

- Image encoder ("image_encoder", a functional model): a convolutional stem of
  stride-2 3x3 convolutions (log2(patch_size) of them, as in the "early
  convolutions" ViT of Xiao et al. 2021, which trains better from scratch on
  little data than a single patchify layer), 2-D sin-cos
  `PatchPositionEmbedding2D`, `encoder_layers` pre-norm
  `TransformerEncoderBlock`s and a final layer norm: `(B, S, S, 3) -> (B, P, D)`.
- Decoder: word embedding plus `LearnedPositionEmbedding`, `decoder_layers`
  `TransformerDecoderBlock`s (causal self-attention with a key/value cache for
  decoding, cross-attention to the patches), a final layer norm and a float32
  output projection to `V` logits.
"""

import math

import keras

from keras_attention.layers import (
    LearnedPositionEmbedding,
    PatchPositionEmbedding2D,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

MODEL_KEYS = (
    "image_size", "patch_size", "hidden_dim", "num_heads", "intermediate_dim",
    "encoder_layers", "decoder_layers", "max_caption_length", "dropout",
)


def check_model_config(image_size, patch_size, hidden_dim, num_heads, **_):
    """ValueErrors for sizes that cannot build the network."""
    if not isinstance(patch_size, int) or patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"`patch_size` must be a power of two >= 2. "
                         f"Received: patch_size={patch_size}")
    if not isinstance(image_size, int) or image_size <= 0 or image_size % patch_size:
        raise ValueError(f"`image_size` must be a positive multiple of patch_size="
                         f"{patch_size}. Received: image_size={image_size}")
    if hidden_dim % 4 or hidden_dim % num_heads:
        raise ValueError(f"`hidden_dim` must be divisible by 4 and by num_heads={num_heads}. "
                         f"Received: hidden_dim={hidden_dim}")


def build_image_encoder(image_size, patch_size, hidden_dim, num_heads, intermediate_dim,
                        encoder_layers, dropout):
    """The functional image encoder `(B, S, S, 3)` in [0, 1] -> `(B, P, D)`."""
    images = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Rescaling(4.0, offset=-2.0, name="normalise")(images)
    stages = int(math.log2(patch_size))
    for i in range(stages):
        filters = hidden_dim if i == stages - 1 else max(16, hidden_dim >> (stages - 1 - i))
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                name=f"stem_conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"stem_norm_{i}")(x)
        if i < stages - 1:
            x = keras.layers.Activation("gelu", name=f"stem_gelu_{i}")(x)
    grid = image_size // patch_size
    x = keras.layers.Reshape((grid * grid, hidden_dim), name="patches")(x)  # (B, P, D)
    x = keras.layers.Add(name="add_position")(
        [x, PatchPositionEmbedding2D(grid_size=grid, name="patch_position")(x)]
    )
    x = keras.layers.Dropout(dropout, name="patch_dropout")(x)
    for i in range(encoder_layers):
        x = TransformerEncoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                    name=f"encoder_block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_norm")(x)
    return keras.Model(images, x, name="image_encoder")


def build_backbone(vocabulary_size, image_size=64, patch_size=8, hidden_dim=128,
                   num_heads=4, intermediate_dim=256, encoder_layers=2, decoder_layers=2,
                   max_caption_length=16, dropout=0.1):
    """The captioner network as a functional Keras model.

    Args:
        vocabulary_size: V, including the special tokens.
        image_size: S, the side of the square RGB input.
        patch_size: stride of the convolutional stem, a power of two.
        hidden_dim: D.
        num_heads: heads of every attention layer.
        intermediate_dim: feed-forward hidden size.
        encoder_layers, decoder_layers: number of blocks.
        max_caption_length: positions of the decoder (`[START]` included).
        dropout: dropout rate of the blocks and embeddings.

    Returns:
        A `keras.Model` named "captioner_backbone" taking `{"images": (B, S, S, 3)
        float in [0, 1], "tokens": (B, T) int32}` and returning `(B, T, V)`
        float32 logits of the next word. Its layers "image_encoder",
        "token_embedding", "position_embedding", "decoder_block_<i>",
        "decoder_norm" and "logits" are used for cached decoding.
    """
    check_model_config(image_size, patch_size, hidden_dim, num_heads)
    encoder = build_image_encoder(image_size, patch_size, hidden_dim, num_heads,
                                  intermediate_dim, encoder_layers, dropout)
    images = keras.Input((image_size, image_size, 3), name="images")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    memory = encoder(images)  # (B, P, D)
    x = keras.layers.Embedding(vocabulary_size, hidden_dim, name="token_embedding")(tokens)
    x = keras.layers.Add(name="add_word_position")(
        [x, LearnedPositionEmbedding(max_caption_length, name="position_embedding")(x)]
    )
    x = keras.layers.Dropout(dropout, name="word_dropout")(x)
    for i in range(decoder_layers):
        x = TransformerDecoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                    name=f"decoder_block_{i}")(x, memory)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")(x)
    return keras.Model({"images": images, "tokens": tokens}, logits,
                       name="captioner_backbone")
