"""Attention distillation: a small English -> Spanish student with and without the
teacher's cross-attention maps.

    python -m recipes.train_distilled_translator   # full run, about 17 min on 2 shared cores
    python -m recipes.train_distilled_translator --smoke --workdir=/tmp/d --jit_compile=false

The teacher is the shipped zoo Transformer `translator_en_es` (frozen). Two students
of the same small size (`hidden_dim`, `num_heads`, `intermediate_dim`,
`num_layers` + `num_layers`) are trained from the same initialisation on the same
first `train_limit` training pairs, with the teacher's vocabulary:

- "token loss": label-smoothed token cross-entropy only;
- "token + attention": the same loss plus `distillation_weight` times
  `AttentionDistillationLoss(method)` between the teacher's and the student's
  decoder cross-attention maps, both computed on the same teacher-forced batch.

Layer and head mapping (the loss's own rule): with `L_t` teacher and `L_s`
student decoder layers, student layer i is compared with teacher layer
`ceil((i + 1) * L_t / L_s) - 1` (3 -> 2 layers: student 0 <- teacher 1,
student 1 <- teacher 2); with `N_t = g * N_s` heads, student head h is compared
with the mean of teacher heads `h * g .. h * g + g - 1` (4 -> 2 heads: student
head 0 <- mean of teacher heads 0, 1; head 1 <- heads 2, 3). Padded target rows
and source columns carry zero teacher weight and are left out.

Both students are decoded greedily on the first `eval_limit` test sentences and
scored with sacreBLEU and chrF (all references of a sentence), beside the
teacher (greedy) and a copy-the-source baseline; the table is printed and
written to `workdir/evaluation.json`, with the attention KL of each student to
the teacher on the validation pairs. The split is the translator recipe's
(`seed` 0 gives the teacher's own split, so the test sentences are unseen by
it). No zoo checkpoint is written.
"""

import dataclasses
import os
import sys
import time

from recipes.config import TrainConfig, parse_args, run_main, smoke_jit_compile

TEACHER = "translator_en_es"


@dataclasses.dataclass
class DistillationConfig(TrainConfig):
    """Recipe fields (see `TrainConfig` for the shared ones).

    Attributes:
        teacher: zoo name of the teacher Transformer translator.
        data: a tab-separated `english<TAB>spanish` file; empty for Tatoeba.
        max_length: longest source/target in subword tokens.
        hidden_dim, num_heads, intermediate_dim, num_layers, dropout: student size
            (`num_layers` encoder and as many decoder blocks).
        distillation_weight: weight of the attention loss in the distilled run.
        distillation_method: "kl" or "mse" (see `AttentionDistillationLoss`).
        train_limit: train on the first N training pairs (0: all).
        eval_limit: evaluate on the first N test sentences (0: all).
        teacher_eval: also score the teacher (greedy) on the same sentences.
    """

    workdir: str = "runs/distilled_translator"
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    final_learning_rate_fraction: float = 0.02
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    teacher: str = TEACHER
    data: str = ""
    max_length: int = 40
    hidden_dim: int = 128
    num_heads: int = 2
    intermediate_dim: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    distillation_weight: float = 1.0
    distillation_method: str = "kl"
    train_limit: int = 40000
    eval_limit: int = 1000
    teacher_eval: bool = True


DEFAULT = DistillationConfig()
SMOKE = DistillationConfig(
    workdir="runs/distilled_translator_smoke", epochs=1, steps_per_epoch=3, batch_size=16,
    warmup_steps=2, max_length=16, hidden_dim=32, num_heads=2, intermediate_dim=64,
    num_layers=1, train_limit=400, eval_limit=16, teacher_eval=False, smoke=True, verbose=0,
    jit_compile=smoke_jit_compile(),
)


def build_trainer(student, teacher=None, distillation_weight=0.0, method="kl"):
    """A `keras.Model` that trains `student`, optionally distilling `teacher`'s
    cross-attention. Its train step is written for the TensorFlow backend
    (`tf.GradientTape`) and for JAX (a stateless step: `jax.value_and_grad` and
    the optimizer's `stateless_apply`).

    Args:
        student: a built `TransformerSeq2Seq`, trained.
        teacher: a `TransformerSeq2Seq` sharing the student's vocabulary, or None
            for the token loss alone. It is not tracked by the trainer (its
            weights are neither trained nor saved in the trainer's checkpoints).
        distillation_weight: weight of the attention loss.
        method: `AttentionDistillationLoss` method.

    Returns:
        The trainer; call it like the student (`{"encoder_tokens",
        "decoder_tokens"}` -> logits); its logs add `attention_loss`.

    Raises:
        ValueError: the backend is neither TensorFlow nor JAX.
    """
    import keras
    from keras import ops

    from keras_attention.analysis import AttentionDistillationLoss

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError("The distillation trainer runs on the TensorFlow and JAX "
                         f"backends. Received: backend={backend}")

    # A plain function: keeps the teacher out of the trainer's tracked weights.
    teacher_maps = None
    if teacher is not None:
        def teacher_maps(x):
            memory, mask = teacher.encode(x["encoder_tokens"], training=False)
            _, cross = teacher.decode(x["decoder_tokens"], memory, mask, training=False,
                                      return_attention_scores=True)
            return [ops.stop_gradient(ops.cast(c, "float32")) for c in cross]  # (B, N_t, T, S)

    class DistillationTrainer(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.student = student
            self.attention_loss = AttentionDistillationLoss(method=method)
            self.attention_tracker = keras.metrics.Mean(name="attention_loss")

        def call(self, inputs, training=None):
            return self.student(inputs, training=training)

        def _forward(self, x, y, training):
            """Student logits, token loss and attention loss of one batch."""
            targets = teacher_maps(x) if teacher_maps is not None else None
            memory, mask = self.student.encode(x["encoder_tokens"], training=training)
            logits, cross = self.student.decode(
                x["decoder_tokens"], memory, mask, training=training,
                return_attention_scores=True)
            token_loss = self.compute_loss(x=x, y=y, y_pred=logits, training=training)
            if targets is None:
                return logits, token_loss, ops.zeros(())
            attention = self.attention_loss(targets, [ops.cast(c, "float32") for c in cross])
            return logits, token_loss, attention

        def _logs(self, y, logits, token_loss, attention):
            # "loss" is the token loss alone, so both runs log comparable values.
            self.attention_tracker.update_state(attention)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(token_loss)
                elif metric is not self.attention_tracker:
                    metric.update_state(y, logits)
            return {m.name: m.result() for m in self.metrics}

        if backend == "tensorflow":
            def train_step(self, data):
                import tensorflow as tf

                x, y = data
                with tf.GradientTape() as tape:
                    logits, token_loss, attention = self._forward(x, y, training=True)
                    loss = token_loss + distillation_weight * attention
                variables = self.trainable_variables
                self.optimizer.apply(tape.gradient(loss, variables), variables)
                return self._logs(y, logits, token_loss, attention)

            def test_step(self, data):
                x, y = data
                return self._logs(y, *self._forward(x, y, training=False))
        else:
            def _stateless(self, fn, groups):
                """`fn()` with each `(variables, values)` of `groups` mapped; returns
                its result and the values of every group afterwards."""
                mapping = [pair for variables, values in groups
                           for pair in zip(variables, values)]
                with keras.StatelessScope(state_mapping=mapping) as scope:
                    result = fn()
                after = []
                for variables, values in groups:
                    current = [scope.get_current_value(v) for v in variables]
                    after.append([value if new is None else new
                                  for new, value in zip(current, values)])
                return result, after

            def _jax_forward(self, state, x, y, training):
                """`_forward` on the values in `state` (trainable, non-trainable,
                metrics); returns its outputs and the updated non-trainable and
                metrics values."""
                trainable, non_trainable, metrics = state
                outputs, (_, non_trainable, metrics) = self._stateless(
                    lambda: self._forward(x, y, training),
                    [(self.trainable_variables, trainable),
                     (self.non_trainable_variables, non_trainable),
                     (self.metrics_variables, metrics)])
                return outputs, non_trainable, metrics

            def _jax_logs(self, metrics, y, outputs):
                logs, (metrics,) = self._stateless(
                    lambda: self._logs(y, *outputs), [(self.metrics_variables, metrics)])
                return logs, metrics

            def train_step(self, state, data):
                import jax

                trainable, non_trainable, optimizer_values, metrics = state
                x, y = data

                def objective(trainable):
                    outputs, rest, new_metrics = self._jax_forward(
                        (trainable, non_trainable, metrics), x, y, training=True)
                    loss = outputs[1] + distillation_weight * outputs[2]
                    loss, _ = self._stateless(
                        lambda: self.optimizer.scale_loss(loss),
                        [(self.optimizer.variables, optimizer_values)])
                    return loss, (outputs, rest, new_metrics)

                (_, (outputs, non_trainable, metrics)), grads = jax.value_and_grad(
                    objective, has_aux=True)(trainable)
                trainable, optimizer_values = self.optimizer.stateless_apply(
                    optimizer_values, grads, trainable)
                logs, metrics = self._jax_logs(metrics, y, outputs)
                return logs, (trainable, non_trainable, optimizer_values, metrics)

            def test_step(self, state, data):
                trainable, non_trainable, metrics = state
                x, y = data
                outputs, non_trainable, metrics = self._jax_forward(
                    (trainable, non_trainable, metrics), x, y, training=False)
                logs, metrics = self._jax_logs(metrics, y, outputs)
                return logs, (trainable, non_trainable, metrics)

    return DistillationTrainer(name="distillation_trainer")


def attention_divergence(student, teacher, dataset, method="kl", max_batches=20):
    """Mean `AttentionDistillationLoss` of student to teacher over `dataset` batches."""
    from keras import ops

    from keras_attention.analysis import AttentionDistillationLoss

    loss = AttentionDistillationLoss(method=method)
    values = []
    for i, (x, _) in enumerate(dataset):
        if i >= max_batches:
            break
        maps = []
        for model in (teacher, student):
            memory, mask = model.encode(x["encoder_tokens"], training=False)
            _, cross = model.decode(x["decoder_tokens"], memory, mask, training=False,
                                    return_attention_scores=True)
            maps.append([ops.cast(c, "float32") for c in cross])
        values.append(float(loss(maps[0], maps[1])))
    return round(sum(values) / max(len(values), 1), 4)


def main(argv=None):
    config = parse_args(sys.argv[1:] if argv is None else argv, DEFAULT, SMOKE)
    if config is None:
        return 0
    if config.distillation_method not in ("kl", "mse"):
        raise ValueError("--distillation_method must be 'kl' or 'mse'. "
                         f"Received: distillation_method={config.distillation_method}")

    import keras

    import zoo
    from recipes import training
    from recipes.train_translator import (
        evaluate,
        load_splits,
        make_dataset,
        masked_accuracy,
        masked_loss,
    )
    from zoo.translator.transformer_seq2seq import TransformerSeq2Seq
    from zoo.translator.translator import Translator

    teacher_translator = zoo.load(config.teacher)
    if teacher_translator.kind != "transformer":
        raise ValueError(f"The teacher must be a Transformer translator. "
                         f"Received: teacher={config.teacher}")
    teacher = teacher_translator.model
    teacher.trainable = False
    tok = teacher_translator.tokenizer

    splits = load_splits(config)
    train_ds, train_count = make_dataset(tok, splits["train"], config, training=True)
    valid_ds, _ = make_dataset(tok, splits["valid"], config, training=False)
    if config.steps_per_epoch <= 0:
        config = dataclasses.replace(
            config, steps_per_epoch=max(train_count // config.batch_size, 1))

    test = splits["test"]
    sources = [e for e, _ in test]
    rows = [{"model": "copy source (baseline)", **evaluate(sources, test),
             "attention_kl": None, "train_s": 0.0}]
    if config.teacher_eval:
        start = time.perf_counter()
        scores = evaluate(teacher_translator.translate(sources, beam_size=1), test)
        print(f"Teacher decoded in {time.perf_counter() - start:.1f} s")
        rows.append({"model": f"teacher {config.teacher} (greedy)", **scores,
                     "attention_kl": 0.0, "train_s": None})

    runs = {"token": ("student, token loss", 0.0),
            "distilled": (f"student, token + attention ({config.distillation_method}, "
                          f"weight {config.distillation_weight:g})",
                          config.distillation_weight)}
    extra_runs = {}
    for key, (label, weight) in runs.items():
        run = dataclasses.replace(config, workdir=os.path.join(config.workdir, key))

        def build(weight=weight):
            keras.utils.set_random_seed(config.seed)  # same initial student in both runs
            student = TransformerSeq2Seq(
                tok.vocabulary_size, hidden_dim=config.hidden_dim,
                num_heads=config.num_heads, intermediate_dim=config.intermediate_dim,
                num_encoder_layers=config.num_layers, num_decoder_layers=config.num_layers,
                dropout=config.dropout)
            trainer = build_trainer(student, teacher if weight > 0 else None, weight,
                                    config.distillation_method)
            trainer({"encoder_tokens": keras.ops.ones((1, 3), "int32"),
                     "decoder_tokens": keras.ops.ones((1, 2), "int32")})
            return trainer

        trainer, info = training.fit(
            run, build, train_ds, valid_ds,
            loss=masked_loss(config.label_smoothing), metrics=[masked_accuracy])
        student = trainer.student
        translator = Translator(student, tok, kind="transformer",
                                max_length=config.max_length, beam_size=1)
        start = time.perf_counter()
        hypotheses = translator.translate(sources)
        decode_s = time.perf_counter() - start
        kl = attention_divergence(student, teacher, valid_ds)
        rows.append({"model": label, **evaluate(hypotheses, test), "attention_kl": kl,
                     "train_s": round(info["train_seconds"], 1)})
        extra_runs[key] = {
            "decode_seconds": round(decode_s, 1),
            "val_loss": [round(v, 4) for v in info["history"].get("val_loss", [])],
            "examples": list(zip(sources[:5], hypotheses[:5])),
        }

    extra = {
        "config": config.to_dict(),
        "teacher": config.teacher,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "train_pairs_after_length_filter": train_count,
        "layer_mapping": "student decoder layer i <- teacher layer "
                         "ceil((i + 1) * L_t / L_s) - 1; student head h <- mean of "
                         "teacher heads h*g .. h*g+g-1 (g = N_t / N_s)",
        "attention_kl": "KL(teacher || student) of the cross-attention rows on up to 20 "
                        "validation batches, mapped as above",
        "runs": extra_runs,
    }
    training.write_evaluation(
        rows, os.path.join(config.workdir, "evaluation.json"), extra=extra,
        title=f"Attention distillation from {config.teacher}, greedy decoding, "
              f"first {len(test)} test sentences")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
