"""Where recipes write checkpoints: under the workdir by default, never into the zoo
from a smoke run, never over a zoo checkpoint without --overwrite=true."""

import importlib

import pytest

from recipes import config as config_lib
from zoo import checkpoint

RECIPES = {
    "train_translator": "translator_en_es",
    "train_recommender": "recommender_ml100k_sasrec",
    "train_forecaster": "forecaster_electricity",
    "train_captioner": "captioner_tuxpaint_openclipart",
}
SHIPPED = checkpoint.zoo_roots()[0]


def _fake_manifest_dir(directory):
    checkpoint.write_checkpoint(directory, {"w.bin": b"weights"}, {"name": directory.name})
    return checkpoint.read_manifest(directory)


@pytest.mark.parametrize("module_name, name", sorted(RECIPES.items()))
def test_default_destination_is_under_the_workdir(module_name, name, tmp_path):
    module = importlib.import_module(f"recipes.{module_name}")
    for base in (module.DEFAULT, module.SMOKE):
        config = config_lib.apply_overrides(base, {"workdir": str(tmp_path)})
        assert config_lib.checkpoint_directory(config, name) == str(
            tmp_path / "checkpoints" / name)


@pytest.mark.parametrize("module_name, name", sorted(RECIPES.items()))
@pytest.mark.parametrize("extra, match", [
    (["--smoke"], "A smoke run never writes into the zoo folder"),
    (["--smoke", "--overwrite=true"], "A smoke run never writes into the zoo folder"),
    ([], "is a zoo checkpoint; pass --overwrite=true"),
])
def test_recipe_refuses_the_zoo_before_training(module_name, name, extra, match, tmp_path):
    # Each shipped checkpoint exists, so this is refused before any data is read.
    assert (SHIPPED / name / "manifest.json").is_file()
    module = importlib.import_module(f"recipes.{module_name}")
    before = (SHIPPED / name / "manifest.json").read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match=match):
        module.main([*extra, f"--workdir={tmp_path}", f"--checkpoint_dir={SHIPPED}"])
    assert (SHIPPED / name / "manifest.json").read_bytes() == before
    assert not (tmp_path / "checkpoints").exists()


def test_zoo_dir_from_the_environment_is_protected(tmp_path, monkeypatch):
    root = tmp_path / "my_zoo"
    _fake_manifest_dir(root / "translator_en_es")
    monkeypatch.setenv(checkpoint.ENV_VAR, str(root))
    assert checkpoint.zoo_root_of(root / "translator_en_es") == root.resolve()
    with pytest.raises(checkpoint.CheckpointError, match="--overwrite=true"):
        checkpoint.write_checkpoint(root / "translator_en_es", {"w.bin": b"new"}, {})
    assert (root / "translator_en_es" / "w.bin").read_bytes() == b"weights"
    with pytest.raises(checkpoint.CheckpointError, match="smoke run"):
        checkpoint.write_checkpoint(root / "new_model", {"w.bin": b"new"}, {}, smoke=True)
    assert not (root / "new_model").exists()
    # A new model, or a deliberate replacement, is allowed.
    checkpoint.write_checkpoint(root / "new_model", {"w.bin": b"new"}, {})
    checkpoint.write_checkpoint(root / "translator_en_es", {"w.bin": b"new"}, {},
                                overwrite=True)
    assert (root / "translator_en_es" / "w.bin").read_bytes() == b"new"


def test_outside_the_zoo_a_checkpoint_is_replaced(tmp_path):
    assert checkpoint.zoo_root_of(tmp_path) is None
    _fake_manifest_dir(tmp_path / "model")
    checkpoint.check_destination(tmp_path / "model", smoke=True)
    checkpoint.write_checkpoint(tmp_path / "model", {"w.bin": b"new"}, {}, smoke=True)
    assert (tmp_path / "model" / "w.bin").read_bytes() == b"new"


def test_command_line_prints_one_line(tmp_path, capsys):
    from recipes import train_translator

    code = config_lib.run_main(train_translator.main,
                               ["--smoke", f"--workdir={tmp_path}", f"--checkpoint_dir={SHIPPED}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: A smoke run never writes into the zoo folder")
    assert err.count("\n") == 1
