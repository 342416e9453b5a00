"""The shipped translators on TensorFlow and JAX: the same translations, explain,
and export saying that it needs TensorFlow."""

import os
import subprocess
import sys

import keras
import pytest

import zoo
from tests.zoo.conftest import needs_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SENTENCES = ["Where is the library?", "I like cats.", "Tom is my friend."]

pytestmark = [needs_checkpoint("translator_en_es"),
              needs_checkpoint("translator_en_es_bahdanau")]


def _cli(backend, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend)
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def translator():
    return zoo.load("translator_en_es")


def test_batched_translation_equals_one_by_one(translator):
    # Under JAX the batch and source are padded to fixed shapes; the padding
    # must not change any translation.
    batched = translator.translate(SENTENCES, beam_size=2)
    assert batched == [translator.translate([s], beam_size=2)[0] for s in SENTENCES]
    assert "biblioteca" in batched[0]


def test_decode_ids_returns_one_row_per_source(translator):
    from zoo.translator.translator import build_inputs

    source = build_inputs(translator.tokenizer, SENTENCES[:3], translator.max_length)
    ids = translator.decode_ids(source, beam_size=1)
    assert ids.shape == (3, translator.max_length) and str(ids.dtype) == "int32"


def test_export_outside_tensorflow_says_how_to_export(translator, tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow") as caught:
        translator.export(str(tmp_path / "export"))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "export").exists()


def test_cli_translate_under_jax_matches_this_backend(translator):
    done = _cli("jax", "translate", *SENTENCES)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == translator.translate(SENTENCES)


# Three more JAX processes (30 to 90 s each on a busy machine).
@pytest.mark.large
def test_cli_bahdanau_explain_and_export_under_jax(tmp_path):
    baseline = zoo.load("translator_en_es_bahdanau")
    done = _cli("jax", "translate", "--model=translator_en_es_bahdanau", *SENTENCES[:2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == baseline.translate(SENTENCES[:2])

    done = _cli("jax", "explain", "translator_en_es", SENTENCES[0],
                f"--out={tmp_path / 'map.png'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "map.png").stat().st_size > 0 and "biblioteca" in done.stdout

    done = _cli("jax", "translate", f"--export={tmp_path / 'export'}")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "KERAS_BACKEND=tensorflow" in done.stderr
    assert not (tmp_path / "export").exists()
