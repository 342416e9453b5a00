"""The captioner network: a hybrid ViT image encoder and a Transformer decoder.

Shape legend: B batch, S image side, G patch-grid side (S / patch_size),
P = G * G patches, T caption length, D hidden size, V vocabulary size.

Show, Attend and Tell (Xu et al. 2015) in Transformer form: the image becomes
a grid of patch features, and every decoder block cross-attends from the words
to the patches, so each generated word has an attention map over the image.

- Image encoder ("image_encoder", a functional model): random shifts while
  training (`RandomShift`), a convolutional stem of
  stride-2 3x3 convolutions (log2(patch_size) of them, as in the "early
  convolutions" ViT of Xiao et al. 2021, which trains better from scratch on
  little data than a single patchify layer), 2-D sin-cos
  `PatchPositionEmbedding2D`, `encoder_layers` pre-norm
  `TransformerEncoderBlock`s and a final layer norm: `(B, S, S, 3) -> (B, P, D)`.
- Retrieval (when `retrieval_neighbours` K > 0): `CaptionRetrieval` finds the
  K training images most similar to the query (pooled pixels, as the
  nearest-neighbour baseline) and returns their captions; `CaptionMemory`
  appends the embedded words of those captions (the decoder's own word
  embedding) to the patches, `fusion_layers` `TransformerEncoderBlock`s let
  patches and retrieved words attend to each other, and the decoder's
  cross-attention reads the joint memory `(B, P + K * L, D)`. A `CopyHead`
  mixes the vocabulary softmax with copying a retrieved word
  (pointer-generator), so the output is then normalised log-probabilities
  rather than raw logits (`log_softmax` leaves either unchanged). While
  training, each image's own datastore row is excluded (input "exclude").
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
from zoo.captioner.caption_memory import CaptionMemory
from zoo.captioner.copy_head import CopyHead
from zoo.captioner.random_shift import RandomShift
from zoo.captioner.retrieval import CaptionRetrieval

MODEL_KEYS = (
    "image_size", "patch_size", "hidden_dim", "num_heads", "intermediate_dim",
    "encoder_layers", "decoder_layers", "max_caption_length", "dropout",
    "retrieval_neighbours", "fusion_layers", "copy_successors",
)
# Model keys that configs written before retrieval existed may lack, with the
# value that builds the same network.
MODEL_KEY_DEFAULTS = {"retrieval_neighbours": 0, "fusion_layers": 0, "copy_successors": False}


def check_model_config(image_size, patch_size, hidden_dim, num_heads, retrieval_neighbours=0,
                       fusion_layers=0, datastore_size=None, **_):
    """ValueErrors for sizes that cannot build the network."""
    for name, value in (("retrieval_neighbours", retrieval_neighbours),
                        ("fusion_layers", fusion_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int. Received: {name}={value!r}")
    if retrieval_neighbours and datastore_size is not None and \
            not retrieval_neighbours < datastore_size:
        raise ValueError(f"`retrieval_neighbours` must be below the datastore size "
                         f"{datastore_size}. Received: retrieval_neighbours={retrieval_neighbours}")
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
                        encoder_layers, dropout, augment_shift=0):
    """The functional image encoder `(B, S, S, 3)` in [0, 1] -> `(B, P, D)`."""
    images = keras.Input((image_size, image_size, 3), name="images")
    x = RandomShift(augment_shift, name="random_shift")(images)  # identity unless training
    x = keras.layers.Rescaling(4.0, offset=-2.0, name="normalise")(x)
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
                   max_caption_length=16, dropout=0.1, retrieval_neighbours=0,
                   fusion_layers=0, datastore_size=0, augment_shift=0,
                   copy_successors=False):
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
        retrieval_neighbours: K, retrieved captions per image; 0 turns
            retrieval off.
        fusion_layers: encoder blocks over patches and retrieved words (used
            only with retrieval).
        datastore_size: M, training images in the retrieval datastore (needed
            with retrieval; fill it with `CaptionRetrieval.set_datastore`).
        augment_shift: largest random shift in pixels (white fill) applied to
            the image encoder's input while training (`RandomShift`); it has
            no weights and does nothing at inference. Retrieval sees the
            unshifted image.
        copy_successors: the copy head favours the retrieved word that
            follows the current input word in its caption (`CopyHead`'s
            `caption_length`; used only with retrieval).

    Returns:
        A `keras.Model` named "captioner_backbone" taking `{"images": (B, S, S, 3)
        float in [0, 1], "tokens": (B, T) int32}` (plus `"exclude": (B,)` int32,
        a datastore row per image to leave out or -1, with retrieval) and
        returning `(B, T, V)` float32 logits of the next word (with retrieval,
        log-probabilities of the copy-or-generate mixture). Its layers
        "image_encoder", "retrieval", "caption_memory", "fusion_block_<i>",
        "fusion_norm", "token_embedding", "position_embedding",
        "decoder_block_<i>", "decoder_norm", "logits" and "copy_head" are used
        for cached decoding (see `zoo.captioner.decoding.DecoderParts`).
    """
    check_model_config(image_size, patch_size, hidden_dim, num_heads, retrieval_neighbours,
                       fusion_layers, datastore_size if retrieval_neighbours else None)
    encoder = build_image_encoder(image_size, patch_size, hidden_dim, num_heads,
                                  intermediate_dim, encoder_layers, dropout, augment_shift)
    images = keras.Input((image_size, image_size, 3), name="images")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    inputs = {"images": images, "tokens": tokens}
    memory = encoder(images)  # (B, P, D)
    memory_mask = None
    embedding = keras.layers.Embedding(vocabulary_size, hidden_dim, name="token_embedding")
    if retrieval_neighbours:
        inputs["exclude"] = keras.Input((), dtype="int32", name="exclude")
        ids, similarity = CaptionRetrieval(datastore_size, max_caption_length,
                                           retrieval_neighbours, name="retrieval")(
            images, inputs["exclude"])  # (B, K, L), (B, K)
        memory, memory_mask = CaptionMemory(retrieval_neighbours, max_caption_length,
                                            name="caption_memory")(
            memory, embedding(ids), ids, similarity)  # (B, P + K * L, D)
        # The fusion blocks have no dropout: with it, XLA on CPU compiled this
        # graph into a training step about ten times slower.
        for i in range(fusion_layers):
            memory = TransformerEncoderBlock(num_heads, intermediate_dim, dropout=0.0,
                                             name=f"fusion_block_{i}")(
                memory, padding_mask=memory_mask)
        memory = keras.layers.LayerNormalization(epsilon=1e-5, name="fusion_norm")(memory)
    x = embedding(tokens)
    x = keras.layers.Add(name="add_word_position")(
        [x, LearnedPositionEmbedding(max_caption_length, name="position_embedding")(x)]
    )
    x = keras.layers.Dropout(dropout, name="word_dropout")(x)
    for i in range(decoder_layers):
        x = TransformerDecoderBlock(num_heads, intermediate_dim, dropout=dropout,
                                    name=f"decoder_block_{i}")(
            x, memory, encoder_padding_mask=memory_mask)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")(x)
    if retrieval_neighbours:
        logits = CopyHead(encoder.output_shape[1],
                          max_caption_length if copy_successors else None,
                          name="copy_head")(
            x, memory, memory_mask, ids, logits, tokens)  # normalised log-probabilities
    return keras.Model(inputs, logits,
                       name="captioner_backbone")
