"""The training loop shared by every recipe.

`fit` builds and compiles the model inside the chosen distribution strategy, trains it
with XLA, a warmup-cosine learning rate, AdamW and gradient clipping, and after every
epoch writes a resumable checkpoint (weights with optimizer state, plus the epoch) and
the best weights so far, each atomically: a file appears under its final name only once
it is complete. Running the same command again with the same `workdir` resumes after
the last finished epoch, on the same data stream, as if it had not stopped.

Workdir layout:

    workdir/
      backup/state.json                 {"epoch": e, "weights": ..., "best": ...}
      backup/epoch-000e.weights.h5      weights + optimizer state after epoch e
      best.weights.h5                   best weights by `monitor`
      logs/                             TensorBoard
      evaluation.json                   written by `write_evaluation`
"""

import json
import math
import os
import time

import keras
import numpy as np

from recipes.config import TrainConfig

_STRATEGIES = ("auto", "none", "mirrored", "multiworker", "tpu")


def atomic_write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically; NumPy scalars and arrays allowed."""
    from zoo.checkpoint import atomic_write_text

    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    atomic_write_text(path, text)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def _device_kind():
    """"tpu", "gpu" or "cpu" for the current backend's default devices."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU"):
            return "tpu"
        if tf.config.list_logical_devices("GPU"):
            return "gpu"
    return "cpu"


def choose_precision(precision="auto"):
    """Sets and returns the global dtype policy name.

    "auto" gives mixed_float16 on GPU, mixed_bfloat16 on TPU and float32 on CPU.
    """
    if precision == "auto":
        precision = {"gpu": "mixed_float16", "tpu": "mixed_bfloat16"}.get(
            _device_kind(), "float32"
        )
    keras.mixed_precision.set_dtype_policy(precision)
    return precision


class _NoStrategy:
    """Stands in for a tf.distribute strategy: a no-op scope, one replica."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def make_strategy(name="auto"):
    """Returns an object with `scope()` and `num_replicas_in_sync`.

    On TensorFlow: "none" -> default, "mirrored" -> MirroredStrategy over the visible
    GPUs (or the logical CPUs when there is no GPU), "multiworker" ->
    MultiWorkerMirroredStrategy (from TF_CONFIG), "tpu" -> TPUStrategy, "auto" ->
    TPU if present, mirrored if more than one GPU, else none. On JAX, "auto" and
    "mirrored" set `keras.distribution.DataParallel` when more than one device exists.
    """
    if name not in _STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {', '.join(_STRATEGIES)}. Received: strategy={name}"
        )
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if name == "tpu" and jax.default_backend() != "tpu":
            raise ValueError("strategy=tpu needs a TPU. Received: strategy=tpu")
        if name != "none" and len(jax.devices()) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return _NoStrategy()
    if backend != "tensorflow":
        if name not in ("auto", "none"):
            raise ValueError(
                f"strategy={name} needs the TensorFlow or JAX backend. "
                f"Received: strategy={name}"
            )
        return _NoStrategy()

    import tensorflow as tf

    if name == "auto":
        if tf.config.list_logical_devices("TPU"):
            name = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return _NoStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


@keras.saving.register_keras_serializable(package="keras_attention")
class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to `peak * final_fraction`."""

    def __init__(self, peak, warmup_steps, total_steps, final_fraction=0.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = keras.ops.maximum(float(self.warmup_steps), 1.0)
        warm = self.peak * keras.ops.minimum((step + 1.0) / warmup, 1.0)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        floor = self.final_fraction
        decayed = self.peak * (floor + (1.0 - floor) * cosine)
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "final_fraction": self.final_fraction,
        }


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the training state after every epoch and the best weights, atomically."""

    def __init__(self, workdir, monitor="val_loss", mode="min", best=None,
                 train_seconds=0.0):
        super().__init__()
        self.train_seconds = float(train_seconds)
        self._start = None
        self.backup_dir = os.path.join(workdir, "backup")
        self.best_path = os.path.join(workdir, "best.weights.h5")
        self.monitor = monitor
        self.mode = mode
        self.best = best

    def _improved(self, value):
        if value is None or not np.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        self.train_seconds += now - self._start
        self._start = now
        value = logs.get(self.monitor)
        value = None if value is None else float(value)
        if self._improved(value):
            self.best = value
            tmp = self.best_path.replace(".weights.h5", ".tmp.weights.h5")
            self.model.save_weights(tmp)
            os.replace(tmp, self.best_path)
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        tmp = os.path.join(self.backup_dir, f"epoch-{epoch + 1:04d}.tmp.weights.h5")
        self.model.save_weights(tmp)
        os.replace(tmp, os.path.join(self.backup_dir, name))
        state = {"epoch": epoch + 1, "weights": name, "best": self.best,
                 "monitor": self.monitor, "train_seconds": round(self.train_seconds, 1)}
        atomic_write_json(os.path.join(self.backup_dir, "state.json"), state)
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


def _replicas_on_cpu(strategy):
    """True for a multi-replica tf.distribute strategy whose devices are all CPUs."""
    devices = getattr(getattr(strategy, "extended", None), "worker_devices", ())
    return len(devices) > 1 and all("CPU" in d.upper() for d in devices)


def _with_known_length(dataset):
    """`dataset` with its number of batches known to tf.data: counted once when a
    filter or similar hides it, so that Keras does not end every validation pass
    with "Your input ran out of data"."""
    import tensorflow as tf

    if dataset is None or int(dataset.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return dataset
    count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def read_state(workdir):
    """The saved training state of `workdir`, or None when there is none."""
    path = os.path.join(workdir, "backup", "state.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fit(
    config,
    build_model,
    train_ds,
    valid_ds,
    loss,
    metrics=None,
    monitor="val_loss",
    mode="min",
):
    """Trains a model with the shared recipe loop.

    Args:
        config: a `TrainConfig` (or subclass).
        build_model: function with no arguments returning an uncompiled Keras
            model; called inside the strategy scope, after the precision is set.
        train_ds: finite, batched `tf.data.Dataset` of `(x, y)`; shuffle it with a
            fixed seed and `reshuffle_each_iteration=True` so the stream is the same
            after a resume.
        valid_ds: batched `tf.data.Dataset` evaluated after every epoch, or None.
        loss: a Keras loss.
        metrics: Keras metrics.
        monitor: the log key that picks the best weights.
        mode: "min" or "max" for `monitor`.

    Returns:
        `(model, info)`: the model with the best weights loaded (or the last ones
        when there was no improvement to record), and a dict with `history`,
        `train_seconds` (all epochs so far, across resumed runs),
        `session_seconds` (this call), `resumed_from_epoch`, `steps_per_epoch` and
        `precision`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig. Received: config={config!r}")
    os.makedirs(config.workdir, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    precision = choose_precision(config.precision)
    strategy = make_strategy(config.strategy)

    steps_per_epoch = config.steps_per_epoch
    if steps_per_epoch <= 0:
        cardinality = int(train_ds.cardinality())
        if cardinality <= 0:
            raise ValueError(
                "The training dataset has unknown or infinite length; set "
                f"steps_per_epoch. Received: steps_per_epoch={config.steps_per_epoch}"
            )
        steps_per_epoch = cardinality
    total_steps = steps_per_epoch * config.epochs

    state = read_state(config.workdir)
    initial_epoch = state["epoch"] if state else 0

    jit_compile = config.jit_compile
    if jit_compile and _replicas_on_cpu(strategy):
        # TensorFlow's XLA cannot compile a step whose mirrored variables live on
        # several logical CPU devices ("resource ... located in device CPU:1 from
        # device CPU:0"); GPU and TPU replicas compile fine.
        print("jit_compile disabled: XLA does not support mirrored replicas on CPU devices.")
        jit_compile = False

    with strategy.scope():
        model = build_model()
        schedule = WarmupCosineSchedule(
            config.learning_rate,
            config.warmup_steps,
            total_steps,
            config.final_learning_rate_fraction,
        )
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule,
            weight_decay=config.weight_decay,
            clipnorm=config.clipnorm or None,
        )
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            jit_compile=jit_compile,
        )
        if state:
            # Build the optimizer so its state loads with the weights.
            optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(config.workdir, "backup", state["weights"]))
            print(f"Resuming {config.workdir} after epoch {initial_epoch}.")

    checkpointer = ResumableCheckpoint(
        config.workdir, monitor=monitor, mode=mode,
        best=state["best"] if state else None,
        train_seconds=state.get("train_seconds", 0.0) if state else 0.0,
    )
    callbacks = [
        checkpointer,
        keras.callbacks.TensorBoard(os.path.join(config.workdir, "logs")),
    ]
    # Same stream as an uninterrupted run: skip the batches already trained on.
    stream = train_ds.repeat().skip(initial_epoch * steps_per_epoch)
    start = time.perf_counter()
    history = {}
    if initial_epoch < config.epochs:
        result = model.fit(
            stream,
            validation_data=_with_known_length(valid_ds),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,  # `train_ds` shuffles itself; Keras warns that it ignores True
        )
        history = result.history
    session_seconds = time.perf_counter() - start

    best_path = os.path.join(config.workdir, "best.weights.h5")
    if os.path.exists(best_path):
        model.load_weights(best_path)
    return model, {
        "history": history,
        "train_seconds": max(checkpointer.train_seconds, 0.0),
        "session_seconds": session_seconds,
        "resumed_from_epoch": initial_epoch,
        "steps_per_epoch": steps_per_epoch,
        "precision": precision,
    }


def format_table(rows, columns=None):
    """Formats a list of dicts as a fixed-width text table."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_format_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _format_cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_evaluation(rows, path, extra=None, title="Evaluation"):
    """Prints `rows` (list of dicts) as a table and writes them, with `extra`, as JSON."""
    print(f"\n{title}\n{format_table(rows)}\n")
    payload = {"rows": rows}
    if extra:
        payload.update(extra)
    atomic_write_json(path, payload)
    return payload
