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
        strategy: "auto", "none", "mirrored", "multiworker" or "tpu" (TensorFlow);
            on JAX, "auto"/"mirrored" use `keras.distribution.DataParallel` when more
            than one device is present.
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
    seed: int = 0
    verbose: int = 1
    smoke: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


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
    return apply_overrides(base, overrides)


def describe(config):
    """A help text listing every key with its type and default value."""
    lines = [f"{type(config).__name__} keys (override with --key=value):"]
    types = _field_types(type(config))
    for key, value in dataclasses.asdict(config).items():
        lines.append(f"  --{key}={value}  ({types[key].__name__})")
    lines.append("  --smoke  use the seconds-long smoke variant")
    return "\n".join(lines)
