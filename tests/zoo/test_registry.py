import subprocess
import sys

import pytest

import zoo
from zoo import checkpoint
from zoo import registry
from zoo.checkpoint import CheckpointError
from zoo.registry import ZooEntry

FAKE = ZooEntry(
    name="fake_forecaster",
    task="forecast",
    loader="tests.zoo.test_registry:load_fake",
    recipe="python -m recipes.train_fake",
    description="A stand-in used by the tests.",
)


class FakeModel:
    def __init__(self, directory, manifest):
        self.directory = directory
        self.manifest = manifest

    def forecast(self, history):
        return [history[-1]] * self.manifest["config"]["horizon"]


def load_fake(directory, manifest):
    return FakeModel(directory, manifest)


@pytest.fixture
def fake_entry():
    registry.register(FAKE)
    yield FAKE
    registry.unregister(FAKE.name)


@pytest.fixture
def zoo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    return tmp_path


def _write_fake(directory, **manifest):
    fields = {"name": FAKE.name, "task": "forecast", "config": {"horizon": 3}}
    fields.update(manifest)
    return checkpoint.write_checkpoint(directory, {"weights.bin": b"\x01\x02"}, fields)


def test_builtin_entries():
    names = [entry.name for entry in zoo.entries()]
    assert names == sorted(names)
    entry = registry.get_entry("translator_en_es")
    assert entry.task == "translate"
    assert entry.loader == "zoo.translator.translator:load_translator"
    assert entry.recipe == "python -m recipes.train_translator"
    # One recipe run trains both translators.
    assert registry.get_entry("translator_en_es_bahdanau").recipe == (
        "python -m recipes.train_translator"
    )


def test_unknown_name():
    with pytest.raises(ValueError) as info:
        registry.get_entry("no_such_model")
    message = str(info.value)
    assert "Available: " in message and "translator_en_es" in message
    assert message.endswith("Received: name='no_such_model'")
    with pytest.raises(ValueError, match="Unknown zoo model"):
        zoo.load("no_such_model")
    with pytest.raises(ValueError, match="Unknown zoo model"):
        registry.unregister("no_such_model")


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "Bad Name"),
        ("name", ""),
        ("task", "summarise"),
        ("loader", "zoo.translator.translator.load"),
        ("loader", "zoo:"),
        ("recipe", " "),
        ("description", None),
    ],
)
def test_entry_validation(field, value):
    fields = {
        "name": "ok",
        "task": "forecast",
        "loader": "a.b:c",
        "recipe": "python -m x",
        "description": "",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=f"Received: {field}={value!r}"):
        ZooEntry(**fields)


def test_register_rules(fake_entry):
    assert registry.register(fake_entry) is fake_entry  # same entry again: no-op
    other = ZooEntry("fake_forecaster", "forecast", "a.b:c", "python -m other")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(other)
    registry.register(other, replace=True)
    assert registry.get_entry("fake_forecaster").recipe == "python -m other"
    with pytest.raises(TypeError, match="must be a ZooEntry"):
        registry.register({"name": "x"})


def test_available(zoo_dir, fake_entry, tmp_path_factory, monkeypatch):
    assert zoo.available() == []
    _write_fake(zoo_dir / "fake_forecaster")
    (zoo_dir / "translator_en_es").mkdir()
    (zoo_dir / "not_registered").mkdir()
    (zoo_dir / "translator_en_es_bahdanau").write_text("a file, not a folder")
    assert zoo.available() == ["fake_forecaster", "translator_en_es"]
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path_factory.mktemp("other_zoo")))
    assert zoo.available() == []


def test_load(zoo_dir, fake_entry):
    _write_fake(zoo_dir / "fake_forecaster")
    model = zoo.load("fake_forecaster")
    assert isinstance(model, FakeModel)
    assert model.directory == zoo_dir / "fake_forecaster"
    assert model.manifest["files"]["weights.bin"]
    assert model.forecast([1.0, 2.0]) == [2.0, 2.0, 2.0]


def test_load_from_directory(tmp_path, fake_entry):
    directory = _write_fake(tmp_path / "elsewhere")
    assert zoo.load("fake_forecaster", directory=str(directory)).directory == directory


def test_load_missing_checkpoint(zoo_dir, fake_entry):
    with pytest.raises(CheckpointError) as info:
        zoo.load("fake_forecaster")
    assert str(info.value) == (
        f"Checkpoint {zoo_dir / 'fake_forecaster'}: does not exist. "
        f"Re-create it with: python -m recipes.train_fake --checkpoint_dir={zoo_dir} "
        "--overwrite=true"
    )


def test_load_builtin_missing_names_recipe(zoo_dir):
    recipe = "python -m recipes.train_translator"
    with pytest.raises(CheckpointError, match=recipe):
        zoo.load("translator_en_es_bahdanau")


def test_load_verifies_before_loading(zoo_dir, fake_entry, monkeypatch):
    directory = _write_fake(zoo_dir / "fake_forecaster")
    (directory / "weights.bin").write_bytes(b"\x01\x03")
    monkeypatch.setattr(sys.modules[__name__], "load_fake", None)  # must not be reached
    with pytest.raises(CheckpointError, match="'weights.bin' has sha256 .*train_fake"):
        zoo.load("fake_forecaster")


@pytest.mark.parametrize("field, value", [("name", "other_model"), ("task", "translate")])
def test_load_refuses_other_model(zoo_dir, fake_entry, field, value):
    _write_fake(zoo_dir / "fake_forecaster", **{field: value})
    with pytest.raises(CheckpointError, match=f"made for {field} '{value}'.*train_fake"):
        zoo.load("fake_forecaster")


def test_load_bad_loader(zoo_dir):
    entry = ZooEntry("fake_broken", "forecast", "tests.zoo.no_such_module:load", "python -m x")
    missing_function = ZooEntry(
        "fake_nofunc", "forecast", "tests.zoo.test_registry:no_such_function", "python -m x"
    )
    registry.register(entry)
    registry.register(missing_function)
    try:
        for item in (entry, missing_function):
            _write_fake(zoo_dir / item.name, name=item.name)
        with pytest.raises(ImportError, match="'fake_broken' cannot be imported"):
            zoo.load("fake_broken")
        with pytest.raises(ImportError, match="has no function 'no_such_function'"):
            zoo.load("fake_nofunc")
    finally:
        registry.unregister("fake_broken")
        registry.unregister("fake_nofunc")


def test_import_is_cheap():
    code = (
        "import sys, zoo, zoo.cli, zoo.serving\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch', 'keras_attention')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
