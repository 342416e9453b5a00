import dataclasses
import importlib

import pytest

from recipes.config import TrainConfig, apply_overrides, describe, field_docs, parse_args


@dataclasses.dataclass
class _Config(TrainConfig):
    name: str = "a"
    rate: float = 0.5


DEFAULT = _Config()
SMOKE = _Config(epochs=1, smoke=True)


def test_defaults_and_overrides():
    config = parse_args(["--epochs=3", "--rate=0.25", "--name=b", "--jit_compile=false"],
                        DEFAULT, SMOKE)
    assert (config.epochs, config.rate, config.name, config.jit_compile) == (3, 0.25, "b", False)
    assert DEFAULT.epochs == 10  # the default instance is not modified


def test_smoke_variant_and_overrides_on_top():
    config = parse_args(["--smoke", "--batch_size=4"], DEFAULT, SMOKE)
    assert config.smoke and config.epochs == 1 and config.batch_size == 4


@pytest.mark.parametrize("raw,expected", [("1", True), ("True", True), ("no", False), ("off", False)])
def test_bool_spellings(raw, expected):
    assert apply_overrides(DEFAULT, {"jit_compile": raw}).jit_compile is expected


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--epoch=3"], "Unknown config key `epoch`.*Valid keys:.*epochs"),
        (["--epochs=three"], "--epochs expects an integer. Received: --epochs=three"),
        (["--rate=fast"], "--rate expects a number"),
        (["--jit_compile=maybe"], "--jit_compile expects a boolean"),
        (["epochs=3"], "--key=value"),
        (["--epochs"], "--key=value"),
        (["--epochs=1", "--epochs=2"], "given twice"),
    ],
)
def test_errors_name_the_key(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_args(argv, DEFAULT, SMOKE)


def test_no_smoke_variant():
    with pytest.raises(ValueError, match="no --smoke"):
        parse_args(["--smoke"], DEFAULT, None)


def test_help_lists_every_key(capsys):
    assert parse_args(["--help"], DEFAULT, SMOKE) is None
    text = capsys.readouterr().out
    for field in dataclasses.fields(_Config):
        assert f"--{field.name}=" in text
    assert describe(DEFAULT).startswith("_Config keys")


@dataclasses.dataclass
class _Documented(TrainConfig):
    """A config whose fields are documented the ways recipes document them.

    Attributes:
        alpha, beta: two fields with
            one text over two lines.
        first ... third: a run of fields.
        last: the last one.

    Raises:
        nothing: this section is not read.
    """

    alpha: int = 1
    beta: int = 2
    first: int = 3
    second: int = 4
    third: int = 5
    last: int = 6


def test_field_docs_read_the_attribute_sections():
    docs = field_docs(_Documented)
    assert docs["alpha"] == docs["beta"] == "two fields with one text over two lines."
    assert docs["first"] == docs["second"] == docs["third"] == "a run of fields."
    assert docs["last"] == "the last one."
    assert docs["epochs"].startswith("number of passes")  # from TrainConfig
    assert "nothing" not in docs
    assert "--second=4  (int)  a run of fields." in describe(_Documented())


@pytest.mark.parametrize("module_name", ["quickstart", "train_translator",
                                         "train_distilled_translator", "train_recommender",
                                         "train_forecaster", "train_captioner"])
def test_every_recipe_key_has_a_description(module_name, capsys):
    module = importlib.import_module(f"recipes.{module_name}")
    docs = field_docs(type(module.DEFAULT))
    assert [f.name for f in dataclasses.fields(module.DEFAULT) if not docs.get(f.name)] == []
    module.main(["--help"])
    for line in capsys.readouterr().out.splitlines()[1:-1]:
        assert len(line.split("  ")) >= 4, line  # key, type and description
