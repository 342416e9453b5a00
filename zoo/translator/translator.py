"""The translation task: tokenise, decode with the KV cache, detokenise, export."""

import json
import os

import numpy as np
from keras import ops

from zoo import inputs
from zoo.translator.tokenizer import EOS_ID, UNK_ID, SubwordTokenizer

MODEL_KINDS = ("transformer", "bahdanau")


def build_model(kind, vocabulary_size, **model_config):
    """A `TransformerSeq2Seq` ("transformer") or `GRUSeq2Seq` ("bahdanau")."""
    if kind == "transformer":
        from zoo.translator.transformer_seq2seq import TransformerSeq2Seq

        return TransformerSeq2Seq(vocabulary_size, **model_config)
    if kind == "bahdanau":
        from zoo.translator.gru_seq2seq import GRUSeq2Seq

        return GRUSeq2Seq(vocabulary_size, **model_config)
    raise ValueError(f"`model` must be one of {MODEL_KINDS}. Received: model={kind}")


def build_inputs(tokenizer, sentences, max_length):
    """`(B, S)` int32 NumPy source ids (0-padded, truncated to `max_length`).

    Tokenisation runs in TensorFlow (tf.data-style string ops) on every backend;
    the model only ever sees the resulting integer array.
    """
    import tensorflow as tf

    ids = tokenizer.tokenize(tf.constant(list(sentences)))
    return ids[:, :max_length].to_tensor(default_value=0).numpy()


class Translator:
    """English -> Spanish translator around a trained seq2seq model.

    Args:
        model: a built `TransformerSeq2Seq` or `GRUSeq2Seq`.
        tokenizer: the `SubwordTokenizer` the model was trained with.
        kind: "transformer" or "bahdanau".
        max_length: most source tokens read and target tokens generated.
        beam_size: default beam size (1 = greedy; the GRU model is greedy only).
    """

    def __init__(self, model, tokenizer, kind="transformer", max_length=40, beam_size=4):
        if kind not in MODEL_KINDS:
            raise ValueError(f"`kind` must be one of {MODEL_KINDS}. Received: kind={kind}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = int(max_length)
        self.beam_size = int(beam_size) if kind == "transformer" else 1
        self._decoders = {}

    def _decoder(self, beam_size):
        """A compiled `(B, S) ids -> (B, max_length) ids` function (cached)."""
        if beam_size not in self._decoders:
            from zoo.compiled import compile_inference
            from zoo.translator import decoding

            def decode(source):
                if self.kind == "bahdanau":
                    return decoding.greedy_decode_gru(self.model, source, self.max_length)
                if beam_size == 1:
                    return decoding.greedy_decode(self.model, source, self.max_length)
                return decoding.beam_search(self.model, source, self.max_length, beam_size)

            self._decoders[beam_size] = compile_inference(decode, self.model.variables)
        return self._decoders[beam_size]

    def decode_ids(self, source, beam_size=None):
        """Target ids `(B, max_length)` (NumPy) for source ids `(B, S)` (NumPy).

        Under JAX, where each new input shape compiles the decoder again, the
        batch is padded to a power of two (repeating its last row) and the source
        to a multiple of 8 tokens, so a run compiles a few shapes only; the
        padding is masked and the extra rows are dropped.
        """
        import keras

        source = np.asarray(source, "int32")
        decoder = self._decoder(self._beam_size(beam_size))
        rows = len(source)
        if keras.backend.backend() == "jax":
            batch = 1 << (rows - 1).bit_length()
            length = min(-(-source.shape[1] // 8) * 8, max(self.max_length, source.shape[1]))
            source = np.pad(source, [(0, 0), (0, length - source.shape[1])])
            source = np.concatenate([source, np.repeat(source[-1:], batch - rows, axis=0)])
        ids = decoder(ops.convert_to_tensor(source))
        return ops.convert_to_numpy(ids)[:rows]

    def _beam_size(self, beam_size):
        if beam_size is None:
            return self.beam_size
        if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) \
                or beam_size < 1:
            raise ValueError(f"`beam_size` must be a positive integer. "
                             f"Received: beam_size={beam_size!r}")
        return int(beam_size)

    def _source(self, sentences, names):
        """`build_inputs` of checked sentences, called `names` in errors. A sentence
        with no known subword (only characters outside the vocabulary) is refused:
        its translation would be invented."""
        source = build_inputs(self.tokenizer, sentences, self.max_length)
        known = (source > UNK_ID).any(axis=1)
        if not known.all():
            i = int(np.argmin(known))
            raise ValueError(f"`{names[i]}` has no word or subword the translator knows. "
                             f"Received: {names[i]}={sentences[i]!r}")
        return source

    def translate(self, sentences, beam_size=None, batch_size=64):
        """Translates a list of English sentences into Spanish.

        Args:
            sentences: a non-empty list of strings.
            beam_size: beam size, default `self.beam_size`; 1 is greedy.
            batch_size: sentences decoded together.

        Returns:
            list of strings, one per sentence.

        Raises:
            TypeError: `sentences` is one string or holds a non-string.
            ValueError: `sentences` is empty, or a sentence is empty, whitespace
                only, or made only of characters outside the vocabulary (its
                translation would be invented).
        """
        sentences = inputs.check_texts(sentences, "sentences")
        beam_size = self._beam_size(beam_size)
        out = []
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start:start + batch_size]
            source = self._source(chunk, [f"sentences[{start + i}]" for i in range(len(chunk))])
            ids = self.decode_ids(source, beam_size)
            text = self.tokenizer.detokenize(ids).numpy()
            out.extend(t.decode("utf-8") for t in text)
        return out

    def attention_maps(self, sentence, beam_size=1):
        """Cross-attention of the translation of one sentence.

        Returns:
            dict with "source_tokens" (S subword strings), "target_tokens" (T
            generated subwords, EOS included) and "weights": one `(N, T, S)` array
            per decoder layer for the Transformer, or one `(1, T, S)` array for the
            GRU model.
        """
        source = self._source([inputs.check_text(sentence, "sentence")], ["sentence"])
        ids = self.decode_ids(source, beam_size)[0]
        end = int(np.argmax(ids == EOS_ID)) + 1 if (ids == EOS_ID).any() else len(ids)
        target = ids[:end]
        decoder_in = np.concatenate([[2], target[:-1]])[None].astype("int32")  # BOS + prefix
        if self.kind == "transformer":
            memory, mask = self.model.encode(source)
            _, cross = self.model.decode(decoder_in, memory, mask,
                                         return_attention_scores=True)
            weights = [ops.convert_to_numpy(w)[0] for w in cross]
        else:
            memory, mask, state = self.model.encode(source)
            _, _, w = self.model.decode(decoder_in, memory, mask, state,
                                        return_attention_scores=True)
            weights = [ops.convert_to_numpy(w)[0][None]]
        vocab = self.tokenizer.vocabulary
        return {
            "source_tokens": [vocab[i] for i in source[0]],
            "target_tokens": [vocab[i] for i in target],
            "weights": weights,
        }

    def export(self, path, beam_size=None):
        """Writes a SavedModel: strings in, translated strings out.

        The serving signature `serving_default(text: string[B]) -> {"translation":
        string[B]}` tokenises with core TensorFlow ops, decodes with the KV cache
        (beam search or greedy) and detokenises inside the graph, so it runs with
        `tensorflow` alone. Needs the TensorFlow backend.

        Raises:
            ValueError: the Keras backend is not TensorFlow (the message says
                how to export).
        """
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "SavedModel export needs the TensorFlow backend; export with "
                "KERAS_BACKEND=tensorflow (e.g. KERAS_BACKEND=tensorflow keras-attention "
                "translate --export DIR). "
                f"Received: backend={keras.backend.backend()}")
        import tensorflow as tf

        from zoo.translator import decoding

        beam_size = self._beam_size(beam_size)
        tokenizer, model, max_length, kind = self.tokenizer, self.model, self.max_length, self.kind
        id_table, token_table = tokenizer._tables()

        def serve(text):
            source = tokenizer.tokenize_core(text)[:, :max_length].to_tensor(default_value=0)
            source = tf.cast(source, tf.int32)
            if kind == "bahdanau":
                ids = decoding.greedy_decode_gru(model, source, max_length)
            elif beam_size == 1:
                ids = decoding.greedy_decode(model, source, max_length)
            else:
                ids = decoding.beam_search(model, source, max_length, beam_size)
            return {"translation": tokenizer.detokenize(ids)}

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(id_table)
        archive.track(token_table)
        archive.add_endpoint(
            "serving_default", serve,
            input_signature=[tf.TensorSpec([None], tf.string, name="text")],
        )
        archive.write_out(path, verbose=False)
        return path


def load_translator(directory, manifest):
    """Zoo loader: builds the model from the manifest config and loads its weights."""
    config = manifest["config"]
    with open(os.path.join(directory, "vocabulary.json"), encoding="utf-8") as f:
        vocabulary = json.load(f)
    tokenizer = SubwordTokenizer(vocabulary)
    model = build_model(config["model"], len(vocabulary), **config_model_args(config))
    _build(model, config["model"])
    model.load_weights(os.path.join(directory, "model.weights.h5"))
    return Translator(model, tokenizer, kind=config["model"],
                      max_length=config["max_length"], beam_size=config["beam_size"])


def config_model_args(config):
    """The model constructor arguments stored in a recipe config dict."""
    if config["model"] == "transformer":
        return {
            "hidden_dim": config["hidden_dim"],
            "num_heads": config["num_heads"],
            "intermediate_dim": config["intermediate_dim"],
            "num_encoder_layers": config["num_layers"],
            "num_decoder_layers": config["num_layers"],
            "dropout": config["dropout"],
        }
    return {"hidden_dim": config["hidden_dim"], "dropout": config["dropout"]}


def _build(model, kind):
    """Creates the model's weights by calling it on a dummy batch."""
    import numpy as np

    dummy = {
        "encoder_tokens": np.ones((1, 3), "int32"),
        "decoder_tokens": np.ones((1, 2), "int32"),
    }
    model(dummy)
