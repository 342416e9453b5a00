"""The captioner task model: images in, captions out, with attention maps.

Shape legend: B batch, S image side, G patch-grid side, P = G * G patches,
T caption length, N heads, D hidden size.
"""

import os
import pathlib

import keras
import numpy as np
from keras import ops

from zoo import inputs
from zoo.compiled import compile_inference
from zoo.captioner import data as data_lib
from zoo.captioner import familiarity as familiarity_lib
from zoo.captioner.backbone import MODEL_KEY_DEFAULTS, MODEL_KEYS, build_backbone
from zoo.captioner.decoding import DecoderParts, beam_search
from zoo.captioner.vocabulary import SPECIAL_TOKENS, Vocabulary

WEIGHTS_FILE = "model.weights.h5"
VOCABULARY_FILE = "vocabulary.json"


def model_config(config):
    """The backbone arguments (see `build_backbone`) from a recipe config dict."""
    config = {**MODEL_KEY_DEFAULTS, **config}
    missing = [k for k in MODEL_KEYS if k not in config]
    if missing:
        raise ValueError(f"The config lacks the model keys {missing}. "
                         f"Received: keys={sorted(config)}")
    return {k: config[k] for k in MODEL_KEYS}


class Captioner:
    """Writes an English caption for an image; Show, Attend and Tell with
    Transformer blocks (see `zoo.captioner.backbone`).

    Images can be given as file paths (PNG, JPEG, or SVG rendered with
    cairosvg), encoded PNG/JPEG bytes, or arrays `(H, W, 3|4)` (uint8, or float
    in [0, 1]); a list of them, or a `(B, H, W, C)` array, is a batch. Every
    image goes through `zoo.captioner.data.preprocess_image_bytes` (transparent
    parts on white, padded to a square, resized), the same function as in
    training and in the exported SavedModel.

    Captions are lower-case words separated by spaces, without punctuation.
    When the vocabulary records how training captions end, a caption ends only
    after a word that ends a training caption, and a one-word caption is one
    that occurs in training (`Vocabulary.endings`, kept in `endings`; set it
    to None to decode without the rule).

    Args:
        backbone: the functional model of `build_backbone`.
        vocabulary: its `Vocabulary`.
        beam_width: default beam width of `caption` (1 is greedy).
        length_penalty: alpha of the beam-search length normalisation.

    Example:

    ```python
    import zoo

    captioner = zoo.load("captioner_tuxpaint")
    captioner.caption(["/usr/share/tuxpaint/stamps/animals/mammals/cat.png"])
    result = captioner.attention_maps("photo.png")
    result["words"], result["maps"].shape     # (T,) words, (T, G, G)
    ```
    """

    def __init__(self, backbone, vocabulary, beam_width=4, length_penalty=0.6,
                 familiarity=None):
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError(f"`vocabulary` must be a Vocabulary. "
                            f"Received: vocabulary of type {type(vocabulary).__name__}")
        self.backbone = backbone
        self.vocabulary = vocabulary
        self.parts = DecoderParts(backbone)
        if self.parts.head.units != len(vocabulary):
            raise ValueError(
                f"The backbone predicts {self.parts.head.units} tokens but the vocabulary has "
                f"{len(vocabulary)}. Received: vocabulary of size {len(vocabulary)}"
            )
        self.image_size = int(self.parts.encoder.input_shape[1])
        self.grid_size = round(self.parts.encoder.output_shape[1] ** 0.5)
        self.beam_width = self._check_beam(beam_width)
        self.length_penalty = float(length_penalty)
        self.endings = vocabulary.endings()
        self.familiarity_profile = familiarity
        self._generators = {}
        self._features = None

    @staticmethod
    def _check_beam(beam_width):
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise ValueError(f"`beam_width` must be a positive int. Received: "
                             f"beam_width={beam_width!r}")
        return beam_width

    # ------------------------------------------------------------- images
    def _one_image(self, item, name):
        if isinstance(item, (str, os.PathLike)):
            if str(item).lower().endswith(".svg"):
                path = inputs.check_file(item, name, "image file")
                item = data_lib.render_svg(path, data_lib.cache_dir())
                if item is None:
                    raise ValueError(f"`{name}` is an SVG file that cannot be rendered. "
                                     f"Received: {name}={path!r}")
            else:
                item = inputs.check_image(item, name)
        if isinstance(item, (bytes, bytearray)):
            return data_lib.decode_image(inputs.check_image_bytes(item, name), self.image_size)
        array = np.asarray(item)
        if array.ndim != 3 or array.shape[-1] not in (3, 4) or array.size == 0:
            raise ValueError(
                f"`{name}` must be an image file, encoded bytes or an array of shape "
                f"(height, width, 3 or 4). Received: {name} with shape={array.shape}"
            )
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"`{name}` must be a uint8 array or float in [0, 1]. "
                                 f"Received: {name} with dtype={array.dtype}")
            if array.shape[:2] == (self.image_size, self.image_size) and array.shape[-1] == 3:
                return np.clip(array, 0.0, 1.0).astype("float32")
            array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype("uint8")
        import tensorflow as tf

        return data_lib.decode_image(tf.io.encode_png(array).numpy(), self.image_size)

    def preprocess(self, images, name="images"):
        """The model input `(B, S, S, 3)` float32 in [0, 1] for `images` (see class doc).

        `name` is how errors call the argument (an item of a batch is `name[i]`).
        """
        batch = isinstance(images, (list, tuple)) or (
            isinstance(images, np.ndarray) and images.ndim == 4)
        if not batch:
            return self._one_image(images, name)[None]
        if len(images) == 0:
            raise ValueError(f"`{name}` must not be empty. Received: {name}={images!r}")
        return np.stack([self._one_image(item, f"{name}[{i}]")
                         for i, item in enumerate(images)])

    # ------------------------------------------------------------- captions
    def _generator(self, beam_width):
        """`generate(images, length_penalty, endings)`, traced once per beam width
        (and per penalty and ending rule); the current settings are passed at each
        call, so changing `length_penalty` or `endings` takes effect."""
        if beam_width not in self._generators:
            def generate(images, length_penalty, endings):
                return beam_search(self.parts, images, beam_width, length_penalty,
                                   endings=endings)

            self._generators[beam_width] = compile_inference(generate,
                                                             self.backbone.variables)
        return self._generators[beam_width]

    def generate_ids(self, pixels, beam_width=None, batch_size=64):
        """Token ids `(B, L)` for preprocessed images `(B, S, S, 3)`."""
        beam_width = self._check_beam(self.beam_width if beam_width is None else beam_width)
        generate = self._generator(beam_width)
        out = []
        for start in range(0, len(pixels), batch_size):
            chunk = ops.convert_to_tensor(np.asarray(pixels[start:start + batch_size], "float32"))
            out.append(ops.convert_to_numpy(generate(chunk, self.length_penalty, self.endings)))
        return np.concatenate(out, axis=0)

    def caption(self, images, beam_width=None, batch_size=64):
        """Captions of `images` (see the class doc for the accepted forms).

        Args:
            images: one image or a batch.
            beam_width: beam width (default: the captioner's); 1 is greedy.
            batch_size: images decoded together.

        Returns:
            A list of captions (str), one per image.
        """
        pixels = self.preprocess(images)
        return [self.vocabulary.decode(row) for row in self.generate_ids(pixels, beam_width,
                                                                         batch_size)]

    def familiarity(self, images, batch_size=128):
        """How far each image lies from the images the captioner was trained on.

        The distance is the Mahalanobis distance of the image's encoder features
        from those of the training images (`zoo.captioner.familiarity`); an image
        above the checkpoint's threshold, chosen on the validation images, is
        unfamiliar: its caption is a guess.

        Args:
            images: one image or a batch (as for `caption`).
            batch_size: images encoded together.

        Returns:
            `(distances, familiar)`: `(B,)` float64 distances and `(B,)` bools.

        Raises:
            ValueError: the checkpoint has no familiarity profile.
        """
        return self.familiarity_pixels(self.preprocess(images), batch_size)

    def familiarity_pixels(self, pixels, batch_size=128):
        """`familiarity` of preprocessed images `(B, S, S, 3)` float32 in [0, 1]."""
        if self.familiarity_profile is None:
            raise ValueError("This captioner's checkpoint has no familiarity profile "
                             f"({familiarity_lib.FILE_NAME}). Received: familiarity=None")
        features = self.image_features(pixels, batch_size)
        distances = familiarity_lib.distances(self.familiarity_profile, features)
        return distances, distances <= float(self.familiarity_profile["threshold"])

    def caption_pixels(self, pixels, beam_width=None, batch_size=64):
        """Captions of preprocessed images `(B, S, S, 3)` float32 in [0, 1]."""
        return [self.vocabulary.decode(row) for row in self.generate_ids(pixels, beam_width,
                                                                         batch_size)]

    def image_features(self, pixels, batch_size=128):
        """Mean-pooled patch features `(B, D)` of preprocessed images."""
        if np.asarray(pixels[:1]).dtype == np.uint8:
            raise ValueError("`pixels` must be preprocessed float images in [0, 1] (see "
                             "`preprocess`). Received: pixels of dtype uint8")
        if self._features is None:
            self._features = compile_inference(
                lambda images: ops.mean(self.parts.encode_image(images), axis=1),
                self.backbone.variables)
        out = []
        for start in range(0, len(pixels), batch_size):
            chunk = ops.convert_to_tensor(np.asarray(pixels[start:start + batch_size], "float32"))
            out.append(ops.convert_to_numpy(self._features(chunk)))
        return np.concatenate(out, axis=0)

    def attention_maps(self, image, beam_width=None, layer=-1):
        """Per-word attention over the image patches for the generated caption.

        The caption is generated as by `caption`, then run through the decoder
        again to read each block's cross-attention. The map of word `t` is the
        attention of the decoder position that predicted it, averaged over
        heads.

        Args:
            image: one image (any form `caption` accepts).
            beam_width: as in `caption`.
            layer: index of the decoder block whose cross-attention is used, or
                `"mean"` for the average over blocks.

        With retrieval, the cross-attention is shared between the patches
        and the retrieved captions' words: `"maps"` is the part on the
        patches, renormalised, and `"retrieved_share"` says how much of each
        word's attention went to the retrieved words instead.

        Returns:
            A dict: `"caption"` (str), `"words"` (list of T str), `"maps"`
            (`(T, G, G)` float32, each summing to 1), `"image"` (the
            preprocessed `(S, S, 3)` image), and with retrieval
            `"neighbours"` (the K retrieved captions, most similar first,
            with their cosine similarity) and `"retrieved_share"` (`(T,)`
            float32 in [0, 1]).
        """
        num_blocks = len(self.parts.blocks)
        if layer != "mean" and (isinstance(layer, bool) or not isinstance(layer, int)
                                or not -num_blocks <= layer < num_blocks):
            raise ValueError(f"`layer` must be 'mean' or a block index in [-{num_blocks}, "
                             f"{num_blocks}). Received: layer={layer!r}")
        pixels = self.preprocess(image, name="image")
        if len(pixels) != 1:
            raise ValueError(f"`image` must be one image. Received: {len(pixels)} images")
        ids = self.generate_ids(pixels, beam_width)[0]
        words = []
        for i in ids.tolist():
            if i == Vocabulary.end_id or i < len(SPECIAL_TOKENS):
                break
            words.append(self.vocabulary.words[i])
        # Position t predicts word t, so the last word is not fed back.
        tokens = np.asarray([[Vocabulary.start_id, *ids[:max(len(words) - 1, 0)]]],
                            dtype="int32")
        pixels_tensor = ops.convert_to_tensor(pixels)
        context = self.parts.encode(pixels_tensor)
        _, cross = self.parts.teacher_forced(ops.convert_to_tensor(tokens), context)
        cross = [ops.convert_to_numpy(ops.cast(c, "float32"))[0] for c in cross]  # (N, T, M)
        chosen = np.mean(cross, axis=0) if layer == "mean" else cross[layer]
        weights = chosen.mean(axis=0)[: len(words)]  # (T, M)
        patches = self.grid_size ** 2
        on_patches = weights[:, :patches].sum(axis=-1, keepdims=True)  # (T, 1)
        maps = weights[:, :patches] / np.maximum(on_patches, 1e-12)
        maps = maps.reshape(len(words), self.grid_size, self.grid_size)
        result = {"caption": " ".join(words), "words": words,
                  "maps": maps.astype("float32"), "image": pixels[0]}
        if self.parts.retrieval is not None:
            ids, similarity = self.parts.neighbour_ids(pixels_tensor)
            result["neighbours"] = [
                (self.vocabulary.decode(row), float(sim)) for row, sim in
                zip(ops.convert_to_numpy(ids)[0], ops.convert_to_numpy(similarity)[0])]
            result["retrieved_share"] = np.clip(1.0 - on_patches[:, 0], 0.0, 1.0).astype(
                "float32")
        return result

    # ------------------------------------------------------------- export
    def export(self, path, beam_width=None):
        """Writes a SavedModel that captions encoded images with TensorFlow alone.

        The signature `serving_default` takes `images`, a 1-D string tensor of
        encoded PNG or JPEG files, and returns `{"caption": 1-D string tensor}`.
        The signature `serving_base64` takes the same files as web-safe base64
        text (`base64.urlsafe_b64encode`), for JSON clients. Decoding,
        preprocessing, beam search with the cache and the mapping of ids to
        words all run inside the graph (TensorFlow core ops only).

        Args:
            path: the SavedModel folder to write.
            beam_width: beam width of the exported search (default: the
                captioner's).

        Returns:
            `path`.
        """
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            raise ValueError("SavedModel export needs the TensorFlow backend. "
                             f"Received: backend={keras.backend.backend()}")
        beam_width = self._check_beam(self.beam_width if beam_width is None else beam_width)
        size = self.image_size
        parts, penalty, endings = self.parts, self.length_penalty, self.endings
        words_table = tf.constant(self.vocabulary.words)
        first_word = len(SPECIAL_TOKENS)

        def serve(images):
            pixels = tf.map_fn(
                lambda d: data_lib.preprocess_image_bytes(d, size), images,
                fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
            )
            ids = beam_search(parts, pixels, beam_width, penalty, endings=endings)  # (B, L)
            before_end = tf.math.cumprod(tf.cast(tf.not_equal(ids, Vocabulary.end_id), tf.int32),
                                    axis=1) > 0
            keep = tf.logical_and(before_end, ids >= first_word)
            words = tf.ragged.boolean_mask(tf.gather(words_table, ids), keep)
            return {"caption": tf.strings.reduce_join(words, axis=1, separator=" ")}

        def serve_base64(images):
            return serve(tf.io.decode_base64(images))

        archive = keras.export.ExportArchive()
        archive.track(self.backbone)
        signature = [tf.TensorSpec((None,), tf.string, name="images")]
        archive.add_endpoint("serving_default", serve, input_signature=signature)
        archive.add_endpoint("serving_base64", serve_base64, input_signature=signature)
        archive.write_out(str(path), verbose=False)
        return path


def build_captioner(config, vocabulary, weights_path=None, datastore_size=0):
    """A `Captioner` built from a recipe config dict, optionally with weights.

    `datastore_size` is the number of training images in the retrieval
    datastore (needed when the config turns retrieval on)."""
    backbone = build_backbone(len(vocabulary), datastore_size=datastore_size,
                              **model_config(config))
    if weights_path is not None:
        backbone.load_weights(str(weights_path))
    return Captioner(backbone, vocabulary, beam_width=int(config.get("beam_width", 4)),
                     length_penalty=float(config.get("length_penalty", 0.6)))


def load_captioner(directory, manifest):
    """The zoo loader: a `Captioner` from a verified checkpoint folder."""
    directory = pathlib.Path(directory)
    vocabulary = Vocabulary.from_json((directory / VOCABULARY_FILE).read_text("utf-8"))
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"The manifest of {directory} has no config dict. "  # noqa: TRY004
                         f"Received: config={config!r}")
    captioner = build_captioner(config, vocabulary, directory / WEIGHTS_FILE,
                                datastore_size=int(manifest.get("datastore_size", 0)))
    if familiarity_lib.FILE_NAME in manifest.get("files", {}):
        captioner.familiarity_profile = familiarity_lib.load_profile(
            directory / familiarity_lib.FILE_NAME)
    return captioner
