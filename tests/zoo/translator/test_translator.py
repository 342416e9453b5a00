"""The shipped translators: load, translate, attention maps, export, serving, CLI."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from zoo.serving import run_saved_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SENTENCES = ["Where is the library?", "I like cats.", "Tom is my friend."]


@pytest.fixture(scope="module")
def translator():
    return zoo.load("translator_en_es")


def _bleu_on_test_slice(model, count):
    from recipes.train_translator import evaluate
    from zoo.translator import data

    manifest = zoo.checkpoint.read_manifest(zoo.checkpoints_root() / "translator_en_es")
    test = data.split_pairs(data.read_pairs(),
                            seed=manifest["data"]["split_seed"])["test"][:count]
    return evaluate(model.translate([e for e, _ in test]), test)


def test_shipped_translator_translates_real_test_sentences(translator):
    out = translator.translate(SENTENCES)
    assert len(out) == 3 and all(isinstance(t, str) and t for t in out)
    assert "biblioteca" in out[0]
    scores = _bleu_on_test_slice(translator, 200)
    assert scores["bleu"] > 25, scores


def test_attention_maps_shapes_and_rows(translator):
    maps = translator.attention_maps("Where is the library?")
    s, t = len(maps["source_tokens"]), len(maps["target_tokens"])
    assert maps["source_tokens"][-1] == "?" and maps["target_tokens"][-1] == "[EOS]"
    assert len(maps["weights"]) == translator.model.num_decoder_layers
    for w in maps["weights"]:
        assert w.shape == (translator.model.num_heads, t, s)
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)


def test_input_errors(translator):
    with pytest.raises(TypeError, match="list of strings"):
        translator.translate("Hello.")
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        translator.translate(["Hello.", 3])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="SavedModel export needs the TensorFlow backend")
def test_export_serves_strings_with_tensorflow_alone(translator, tmp_path):
    path = translator.export(str(tmp_path / "export"), beam_size=1)
    served = run_saved_model(path, {"text": SENTENCES})["translation"]
    assert served == translator.translate(SENTENCES, beam_size=1)


def test_bahdanau_baseline_loads_and_translates():
    baseline = zoo.load("translator_en_es_bahdanau")
    out = baseline.translate(SENTENCES[:2])
    assert len(out) == 2 and all(out)
    maps = baseline.attention_maps(SENTENCES[0])
    assert maps["weights"][0].shape[0] == 1


def test_cli_translate():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "translate", "--beam_size=1",
                           "Where is the library?"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "biblioteca" in done.stdout


def test_corrupt_checkpoint_is_refused_with_recipe_command(tmp_path, monkeypatch):
    import shutil

    source = zoo.checkpoints_root() / "translator_en_es"
    copy = tmp_path / "translator_en_es"
    shutil.copytree(source, copy)
    data = bytearray((copy / "model.weights.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.weights.h5").write_bytes(bytes(data))
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    with pytest.raises(zoo.CheckpointError, match="python -m recipes.train_translator"):
        zoo.load("translator_en_es")


@pytest.mark.large
def test_shipped_checkpoint_reproduces_manifest_bleu(translator):
    manifest = json.loads(
        (zoo.checkpoints_root() / "translator_en_es" / "manifest.json").read_text())
    scores = _bleu_on_test_slice(translator, manifest["metrics"]["test_sentences"])
    assert scores["bleu"] == pytest.approx(manifest["metrics"]["bleu"], abs=0.05)


def test_smoke_recipe_trains_both_models_and_writes_checkpoints(tmp_path):
    from recipes import train_translator

    names = ("translator_en_es", "translator_en_es_bahdanau")
    shipped = {name: (zoo.checkpoints_root() / name / "manifest.json").read_bytes()
               for name in names}
    # The smoke variant compiles with XLA under JAX only (see smoke_jit_compile).
    # No --checkpoint_dir: the checkpoints go under the workdir, never into the zoo.
    assert train_translator.main(["--smoke", f"--workdir={tmp_path / 'run'}"]) == 0
    for name in names:
        assert (zoo.checkpoints_root() / name / "manifest.json").read_bytes() == shipped[name]
        manifest = zoo.checkpoint.verify_checkpoint(tmp_path / "run" / "checkpoints" / name,
                                                    "recipe")
        assert manifest["metrics"]["test_sentences"] == 16
        assert "copy source (baseline)" in manifest["baselines"]
