"""The training loop shared by every recipe.

`fit` builds and compiles the model inside the chosen distribution strategy, trains it
with XLA, a warmup-cosine learning rate, AdamW and gradient clipping, and after every
epoch writes a resumable checkpoint (weights with optimizer state, plus the epoch) and
the best weights so far, each atomically: a file appears under its final name only once
it is complete. Running the same command again with the same `workdir` resumes after
the last finished epoch, on the same data stream, as if it had not stopped.

Several processes (`--strategy=multiworker`: TensorFlow's MultiWorkerMirroredStrategy,
or JAX processes joined by `keras.distribution.initialize`) train one model together:
each process reads its own share of every global batch, and only the chief (worker 0,
or JAX process 0) writes the workdir; give every process the same `--workdir` on a
shared filesystem, so that a restarted group resumes from the chief's state. See
docs/distributed.md.

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


_MULTIWORKER = []  # the process's one multi-worker strategy, once made


def make_strategy(name="auto"):
    """Returns an object with `scope()` and `num_replicas_in_sync`.

    On TensorFlow: "none" -> default, "mirrored" -> MirroredStrategy over the visible
    GPUs (or the logical CPUs when there is no GPU), "multiworker" ->
    MultiWorkerMirroredStrategy (from TF_CONFIG), "tpu" -> TPUStrategy, "auto" ->
    TPU if present, mirrored if more than one GPU, else none. On JAX, "auto" and
    "mirrored" set `keras.distribution.DataParallel` when more than one device exists;
    "multiworker" first calls `keras.distribution.initialize()` (process addresses,
    count and id from the KERAS_DISTRIBUTION_* environment variables) and sets
    DataParallel over the devices of all processes.

    "multiworker" must be made before the process runs any TensorFlow or JAX
    operation (`recipes.config.parse_args` makes it as soon as it reads the flag);
    later calls return that same strategy.
    """
    if name not in _STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {', '.join(_STRATEGIES)}. Received: strategy={name}"
        )
    if name == "multiworker" and _MULTIWORKER:
        return _MULTIWORKER[0]
    backend = keras.backend.backend()
    if backend == "jax":
        if name == "multiworker":
            # Joins the processes named by the KERAS_DISTRIBUTION_* variables; must
            # come before anything touches a JAX device.
            keras.distribution.initialize()
        import jax

        if name == "tpu" and jax.default_backend() != "tpu":
            raise ValueError("strategy=tpu needs a TPU. Received: strategy=tpu")
        if name != "none" and len(jax.devices()) > 1:
            # `fit` gives each process its share of every batch itself
            # (`shard_batches`), so Keras is told not to shard the data again.
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(auto_shard_dataset=False))
        strategy = _NoStrategy()
        if name == "multiworker":
            _MULTIWORKER.append(strategy)
        return strategy
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
        _MULTIWORKER.append(_multi_worker_strategy())
        return _MULTIWORKER[0]
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _tf_config():
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def process_count():
    """Number of processes training together: JAX processes, or the workers of
    TF_CONFIG (1 without it)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_count()
    cluster = _tf_config().get("cluster", {})
    return max(sum(len(cluster.get(kind, ())) for kind in ("chief", "worker")), 1)


def process_index():
    """This process's place among `process_count()`: the JAX process index, or the
    TF_CONFIG task (a "chief" task first, then the workers in order)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    config = _tf_config()
    task = config.get("task", {})
    if not task:
        return 0
    chiefs = len(config.get("cluster", {}).get("chief", ()))
    return int(task.get("index", 0)) + (chiefs if task.get("type") == "worker" else 0)


def is_chief():
    """True in the one process that writes checkpoints, manifests and results."""
    return process_index() == 0


def _saving_is_collective():
    """True where saving weights takes every process (several JAX processes)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def _is_multiworker(strategy):
    import sys

    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _barrier(strategy, name):
    """Waits until every process has reached this point (no-op in one process)."""
    if keras.backend.backend() == "jax":
        import jax

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)
    elif _is_multiworker(strategy):
        import tensorflow as tf

        # An all-reduce across the workers is the barrier.
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def shard_batches(dataset, num_shards, index, multiple=1):
    """This process's share of every batch of `dataset`, for data-parallel training
    where each process feeds its own part of the global batch (JAX).

    Each batch is cut to a multiple of `multiple` (the number of devices, so that
    it splits evenly; the at most `multiple - 1` examples cut are lost to that
    step) and process `index` of `num_shards` keeps its contiguous slice.
    Batches that would be empty are dropped.
    """
    import tensorflow as tf

    def take(*batch):
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        share = size // multiple * multiple // num_shards
        part = tuple(tf.nest.map_structure(lambda t: t[index * share:(index + 1) * share], b)
                     for b in batch)
        return part if len(part) > 1 else part[0]

    def nonempty(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] > 0

    return dataset.map(take).filter(nonempty)


def _data_parallel_devices():
    """Devices of the JAX DataParallel distribution in force, or 0 without one."""
    if keras.backend.backend() != "jax":
        return 0
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 0
    return int(np.prod(distribution.device_mesh.shape))


def _input_for_distribution(dataset, strategy):
    """`dataset` as this process feeds it to the distribution in force."""
    if dataset is None:
        return None
    devices = _data_parallel_devices()
    if devices > 1:
        return shard_batches(dataset, process_count(), process_index(), devices)
    if _is_multiworker(strategy):
        import tensorflow as tf

        # TensorFlow splits every global batch between the workers itself.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return dataset.with_options(options)
    return dataset


def _count_batches(dataset):
    return int(dataset.reduce(np.int64(0), lambda n, *_: n + 1))


def set_remat(model, enabled=True):
    """Turns gradient checkpointing (`remat`) on or off in every Transformer encoder
    and decoder block of `model`; returns how many blocks were set."""
    from keras_attention.layers import TransformerDecoderBlock, TransformerEncoderBlock

    blocks = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, (TransformerEncoderBlock, TransformerDecoderBlock))]
    for block in blocks:
        block.remat = bool(enabled)
    return len(blocks)


def _local_copy(model, loss, metrics):
    """A copy of a functional or sequential `model` on this process alone, with its
    trained weights, for evaluation after a distributed run; the model itself when
    it cannot be cloned."""
    weights = model.get_weights()
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)
    try:
        local = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError):
        return model
    local.set_weights(weights)
    local.compile(loss=loss, metrics=metrics)
    return local


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3's TensorFlow
    trainer gives it with several workers.

    Keras (3.15) reduces the first distributed batch, an `(x, y)` tuple, in one
    `reduce` call, and each step's scalar logs with `axis=0`; across workers
    the strategy accepts neither ("Attempt to convert a value (PerReplica...)",
    "Invalid reduction dimension 0 for input with 0 dimensions"). This subclass
    reduces a structure item by item and a scalar over the replicas alone.
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def reduce_one(item):
                local = (item.values[0] if isinstance(item, tf.distribute.DistributedValues)
                         else item)
                rank = getattr(local, "shape", tf.TensorShape(None)).rank
                parent = super(MultiWorkerMirroredStrategy, self)
                return parent.reduce(reduce_op, item, None if rank == 0 else axis)

            return tf.nest.map_structure(reduce_one, value)

    return MultiWorkerMirroredStrategy()


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
    """Saves the training state after every epoch and the best weights, atomically.

    In a group of processes only the chief writes; the others keep the same
    record of the best value."""

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
        improved = self._improved(value)
        if improved:
            self.best = value  # every process tracks it: each may become the chief
        if not is_chief():
            if _saving_is_collective():
                # Every JAX process must take part in saving (it gathers the
                # arrays); the others write a throwaway copy.
                import tempfile

                with tempfile.TemporaryDirectory() as scratch:
                    if improved:
                        self.model.save_weights(os.path.join(scratch, "best.weights.h5"))
                    self.model.save_weights(os.path.join(scratch, "state.weights.h5"))
            return
        if improved:
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
        when there was no improvement to record; after a JAX run over several
        devices or processes, a copy of it on this process alone when the model
        can be cloned, so that evaluation runs locally), and a dict with `history`,
        `train_seconds` (all epochs so far, across resumed runs),
        `session_seconds` (this call), `resumed_from_epoch`, `steps_per_epoch` and
        `precision`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig. Received: config={config!r}")
    os.makedirs(config.workdir, exist_ok=True)
    strategy = make_strategy(config.strategy)  # first: JAX processes join here
    keras.utils.set_random_seed(config.seed)
    precision = choose_precision(config.precision)

    steps_per_epoch = config.steps_per_epoch
    if steps_per_epoch <= 0:
        cardinality = int(train_ds.cardinality())
        if cardinality <= 0:
            raise ValueError(
                "The training dataset has unknown or infinite length; set "
                f"steps_per_epoch. Received: steps_per_epoch={config.steps_per_epoch}"
            )
        steps_per_epoch = cardinality
    distributed = _data_parallel_devices() > 1
    train_ds = _input_for_distribution(train_ds, strategy)
    valid_ds = _input_for_distribution(valid_ds, strategy)
    if _data_parallel_devices() > 1 and config.steps_per_epoch <= 0:
        steps_per_epoch = _count_batches(train_ds)  # a batch smaller than the devices goes
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
        if config.remat:
            print(f"remat: gradient checkpointing in {set_remat(model)} Transformer blocks.")
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
    callbacks = [checkpointer]
    if is_chief():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(config.workdir, "logs")))
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

    _barrier(strategy, "recipes.training.fit")  # the chief has written its files
    best_path = os.path.join(config.workdir, "best.weights.h5")
    if os.path.exists(best_path):
        model.load_weights(best_path)
    if distributed:  # JAX: evaluation runs on this process's default device
        model = _local_copy(model, loss, metrics)
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
    """Prints `rows` (list of dicts) as a table and writes them, with `extra`, as JSON
    (in the chief process only, see `is_chief`)."""
    print(f"\n{title}\n{format_table(rows)}\n")
    payload = {"rows": rows}
    if extra:
        payload.update(extra)
    if is_chief():
        atomic_write_json(path, payload)
    return payload
