"""Recipe configs: small dataclasses with strict `--key=value` overrides.

Every recipe defines a dataclass that extends `TrainConfig` with its own fields, a
default instance (the full run) and a `smoke()` variant that finishes in seconds.
`parse_args` turns a command line into a config:

    python -m recipes.train_translator --epochs=4 --batch_size=128
    python -m recipes.train_translator --smoke --workdir=/tmp/run

Unknown keys, missing `=value`, and values that do not parse as the field's type
are errors that name the key; nothing is silently ignored.
"""

import dataclasses
import inspect
import re
import typing


@dataclasses.dataclass
class TrainConfig:
    """Fields shared by every recipe; recipes subclass it.

    Attributes:
        workdir: where checkpoints, logs and the evaluation JSON go. A second run with
            the same workdir resumes from the last finished epoch.
        epochs: number of passes (of `steps_per_epoch` steps when that is set).
        steps_per_epoch: steps per epoch, or 0 for one pass over the training data.
        batch_size: global batch size (split across replicas by a strategy).
        learning_rate: peak learning rate after warmup.
        warmup_steps: linear warmup steps; the rate then decays with a cosine to
            `final_learning_rate_fraction * learning_rate` at the last step.
        final_learning_rate_fraction: see `warmup_steps`.
        weight_decay: AdamW decoupled weight decay.
        clipnorm: global gradient-norm clipping, 0 to disable.
        label_smoothing: for classification losses that support it.
        jit_compile: compile train and eval steps with XLA.
        precision: "auto" (mixed_float16 on GPU, mixed_bfloat16 on TPU, float32 on
            CPU), or a Keras dtype policy name such as "float32" or "mixed_bfloat16".
        strategy: "auto", "none", "mirrored", "multiworker" or "tpu". TensorFlow:
            tf.distribute strategies; "multiworker" is MultiWorkerMirroredStrategy,
            one process per worker, configured by TF_CONFIG. JAX: "auto"/"mirrored"
            use `keras.distribution.DataParallel` when more than one device is
            present; "multiworker" first joins the processes named by
            KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
            KERAS_DISTRIBUTION_PROCESS_ID (`keras.distribution.initialize`), then
            data-parallel over every device of every process. See
            docs/distributed.md.
        remat: gradient checkpointing of every Transformer encoder and decoder
            block of the model (their `remat` option, `keras.remat`): less
            activation memory for one more forward pass per step.
        seed: seed for data splits, shuffling and initialisation.
        verbose: Keras progress-bar verbosity (0, 1 or 2).
        smoke: set by `--smoke`; recipes use it to shrink the data as well.
    """

    workdir: str = "runs/default"
    epochs: int = 10
    steps_per_epoch: int = 0
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    final_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.0
    clipnorm: float = 1.0
    label_smoothing: float = 0.0
    jit_compile: bool = True
    precision: str = "auto"
    strategy: str = "auto"
    remat: bool = False
    seed: int = 0
    verbose: int = 1
    smoke: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ZooRecipeConfig(TrainConfig):
    """Fields of the recipes that write zoo checkpoints (see `TrainConfig`).

    Attributes:
        checkpoint_dir: folder that receives the checkpoint folder `<name>`; empty
            for `<workdir>/checkpoints`. To retrain a shipped model in place, give
            the zoo folder (`zoo/checkpoints`) with `--overwrite=true`.
        overwrite: allow replacing an existing checkpoint in the zoo folder
            (`zoo.checkpoint.zoo_roots`). A smoke run never writes there.
    """

    checkpoint_dir: str = ""
    overwrite: bool = False


def smoke_jit_compile():
    """`jit_compile` of the smoke variants: off on TensorFlow, where compiling with
    XLA costs more than a few steps save, and on under JAX, where an eager step
    compiles every operation on its own."""
    import keras

    return keras.backend.backend() == "jax"


def checkpoint_directory(config, name):
    """Where a recipe writes checkpoint `name`, checked before any work is done.

    It is `<checkpoint_dir>/<name>`, or `<workdir>/checkpoints/<name>` when
    `checkpoint_dir` is empty.

    Raises:
        CheckpointError: the folder is in the zoo and the run is a smoke run, or it
            holds a zoo checkpoint and `config.overwrite` is False.
    """
    import os

    from zoo import checkpoint

    root = config.checkpoint_dir or os.path.join(config.workdir, "checkpoints")
    directory = os.path.join(root, name)
    checkpoint.check_destination(directory, overwrite=config.overwrite, smoke=config.smoke)
    return directory


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types(config_cls):
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _parse_value(key, raw, kind):
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(
            f"--{key} expects a boolean (true/false/1/0). Received: --{key}={raw}"
        )
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(
                f"--{key} expects an integer. Received: --{key}={raw}"
            ) from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(
                f"--{key} expects a number. Received: --{key}={raw}"
            ) from None
    if kind is str:
        return raw
    raise TypeError(f"Config field `{key}` has unsupported type {kind!r}.")


def apply_overrides(config, overrides):
    """Returns a copy of `config` with `{key: raw_string}` overrides applied.

    Raises:
        ValueError: for an unknown key or a value that does not parse as the
            field's type. The message names the key and lists the valid keys.
    """
    types = _field_types(type(config))
    values = {}
    for key, raw in overrides.items():
        if key not in types:
            raise ValueError(
                f"Unknown config key `{key}` for {type(config).__name__}. "
                f"Valid keys: {', '.join(sorted(types))}. Received: --{key}={raw}"
            )
        values[key] = _parse_value(key, raw, types[key])
    return dataclasses.replace(config, **values)


def parse_args(argv, default, smoke=None):
    """Builds a config from command-line arguments.

    Args:
        argv: list of arguments (without the program name): `--smoke`, `--help`
            and `--key=value` items.
        default: the recipe's full config instance.
        smoke: the smoke config instance used when `--smoke` is given.

    Returns:
        The config, or `None` when `--help` was asked (the help text is printed).
        With `--strategy=multiworker` the multi-worker strategy is made here,
        before the recipe does any work (`recipes.training.make_strategy`).
    """
    overrides = {}
    use_smoke = False
    for arg in argv:
        if arg in ("-h", "--help"):
            print(describe(default))
            return None
        if arg == "--smoke":
            use_smoke = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(
                "Arguments must look like --key=value (or --smoke, --help). "
                f"Received: {arg}"
            )
        key, raw = arg[2:].split("=", 1)
        if key in overrides:
            raise ValueError(f"--{key} is given twice. Received: {arg}")
        overrides[key] = raw
    if use_smoke:
        if smoke is None:
            raise ValueError("This recipe has no --smoke variant.")
        base = smoke
    else:
        base = default
    config = apply_overrides(base, overrides)
    if getattr(config, "strategy", None) == "multiworker":
        # The processes join before the recipe runs its first TensorFlow or JAX
        # operation (loading data), as both backends require.
        from recipes import training

        training.make_strategy("multiworker")
    return config


_ENTRY = re.compile(r"^([A-Za-z_][\w ,.]*?):\s+(.*)$")


def _attribute_entries(cls):
    """`(names, description)` of each entry of the `Attributes:` section of the
    docstring of `cls` itself (not inherited)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    entries, inside = [], False
    for line in doc.splitlines():
        if not inside:
            inside = line.strip() == "Attributes:"
            continue
        if line and not line.startswith(" "):
            break  # the next section
        if line.startswith("    ") and not line.startswith("     "):
            entries.append(line.strip())
        elif line.strip() and entries:
            entries[-1] += " " + line.strip()
    for entry in entries:
        match = _ENTRY.match(entry)
        if match:
            yield match.group(1), match.group(2)


def field_docs(config_cls):
    """`{field: description}` from the `Attributes:` docstring sections of a config
    class and its bases (a subclass's text wins). An entry may name several fields:
    `a, b, c: ...`, or a run of consecutive fields `a ... c: ...`."""
    order = [f.name for f in dataclasses.fields(config_cls)]
    docs = {}
    for cls in reversed(config_cls.__mro__):
        for names, text in _attribute_entries(cls):
            text = " ".join(text.split())
            for part in names.split(","):
                ends = [n.strip() for n in part.split("...")]
                if len(ends) == 2 and set(ends) <= set(order):
                    first, last = order.index(ends[0]), order.index(ends[1])
                    covered = order[first:last + 1]
                else:
                    covered = [part.strip()]
                for name in covered:
                    docs[name] = text
    return {name: docs[name] for name in order if name in docs}


def describe(config):
    """A help text listing every key with its type, default value and description."""
    lines = [f"{type(config).__name__} keys (override with --key=value):"]
    types = _field_types(type(config))
    docs = field_docs(type(config))
    for key, value in dataclasses.asdict(config).items():
        lines.append(f"  --{key}={value}  ({types[key].__name__})  {docs.get(key, '')}".rstrip())
    lines.append("  --smoke  use the seconds-long smoke variant")
    return "\n".join(lines)


def run_main(main, argv=None):
    """Runs a recipe's `main(argv)` as a command and returns its exit code.

    A mistake the user can fix (a bad `--key=value`, missing data, a refused
    checkpoint folder) is printed as one line `error: ...` on stderr with exit code
    2, not as a traceback. A `main` that returns an int gives that code, anything
    else 0.
    """
    import sys

    from zoo.checkpoint import CheckpointError

    try:
        result = main(argv)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0
