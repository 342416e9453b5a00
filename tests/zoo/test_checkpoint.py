import json
import os

import pytest

from zoo import checkpoint
from zoo.checkpoint import CheckpointError

RECIPE = "python -m recipes.train_example --smoke"


def _manifest():
    return {
        "name": "example",
        "task": "translate",
        "recipe": RECIPE,
        "config": {"num_layers": 2, "dropout": 0.1},
        "metrics": {"bleu": 12.5},
    }


def _write(directory, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01\x02\x03" * 100)
    return checkpoint.write_checkpoint(
        directory,
        {"weights.bin": source, "assets/vocab.txt": b"a\nb\nc\n"},
        _manifest(),
    )


def test_round_trip(tmp_path):
    directory = tmp_path / "ckpt" / "example"
    assert _write(directory, tmp_path) == directory
    assert (directory / "assets" / "vocab.txt").read_bytes() == b"a\nb\nc\n"
    manifest = checkpoint.verify_checkpoint(directory, RECIPE)
    assert manifest == checkpoint.read_manifest(directory)
    assert manifest["config"] == {"num_layers": 2, "dropout": 0.1}
    assert sorted(manifest["files"]) == ["assets/vocab.txt", "weights.bin"]
    assert manifest["files"]["weights.bin"] == checkpoint.sha256_file(directory / "weights.bin")
    # sha256 of "a\nb\nc\n"
    assert manifest["files"]["assets/vocab.txt"] == (
        "880553fca8fcea94e325ee2cfb48e5a985cc797f39a14cc6d3cedecfeb2ae4d2"
    )
    text = (directory / "manifest.json").read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    # No temporary folders left next to the checkpoint.
    assert sorted(p.name for p in directory.parent.iterdir()) == ["example"]


def test_folder_source_and_replace(tmp_path):
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"pb")
    (export / "variables" / "v.data").write_bytes(b"data")
    directory = tmp_path / "example"
    directory.mkdir()
    (directory / "stale.txt").write_text("old")
    checkpoint.write_checkpoint(directory, {"export": export}, _manifest())
    manifest = checkpoint.verify_checkpoint(directory, RECIPE)
    assert sorted(manifest["files"]) == ["export/saved_model.pb", "export/variables/v.data"]
    assert not (directory / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example", "export"]


def test_extra_file_is_fine(tmp_path):
    directory = _write(tmp_path / "example", tmp_path)
    (directory / "notes.txt").write_text("extra")
    checkpoint.verify_checkpoint(directory, RECIPE)


class _Boom(os.PathLike):
    """A source path whose copy fails halfway through the checkpoint."""

    def __fspath__(self):
        raise OSError("disk gone")


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_target_unchanged(tmp_path, existing):
    directory = tmp_path / "example"
    if existing:
        _write(directory, tmp_path)
        before = {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.write_checkpoint(
            directory, {"a.txt": b"first file", "b.bin": _Boom()}, _manifest()
        )
    if existing:
        after = {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        assert after == before
        checkpoint.verify_checkpoint(directory, RECIPE)
    else:
        assert not directory.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_unjsonable_manifest_leaves_nothing(tmp_path):
    directory = tmp_path / "example"
    with pytest.raises(TypeError):
        checkpoint.write_checkpoint(directory, {"a.txt": b"x"}, {"config": {"f": object()}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["", "/abs.txt", "../up.txt", "a/../b.txt", "./a.txt", "a\\b.txt", "manifest.json"]
)
def test_bad_file_names(tmp_path, name):
    with pytest.raises(ValueError, match="Received: name="):
        checkpoint.write_checkpoint(tmp_path / "example", {name: b"x"}, {})
    assert list(tmp_path.iterdir()) == []


def test_bad_argument_types(tmp_path):
    with pytest.raises(TypeError, match="`files` must be a dict"):
        checkpoint.write_checkpoint(tmp_path / "example", [("a", b"x")], {})
    with pytest.raises(TypeError, match="`manifest` must be a dict"):
        checkpoint.write_checkpoint(tmp_path / "example", {}, None)
    with pytest.raises(TypeError, match="Received: source of type int"):
        checkpoint.write_checkpoint(tmp_path / "example", {"a": 3}, {})
    assert list(tmp_path.iterdir()) == []


def test_flipped_byte_is_reported(tmp_path):
    directory = _write(tmp_path / "example", tmp_path)
    expected = checkpoint.read_manifest(directory)["files"]["weights.bin"]
    path = directory / "weights.bin"
    data = bytearray(path.read_bytes())
    data[17] ^= 0x01
    path.write_bytes(bytes(data))
    actual = checkpoint.sha256_file(path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.verify_checkpoint(directory, RECIPE)
    message = str(info.value)
    assert str(directory) in message
    assert "'weights.bin'" in message
    assert f"sha256 {actual[:12]}..., expected {expected[:12]}..." in message
    assert message.endswith(f"Re-create it with: {RECIPE}")
    assert "vocab.txt" not in message


def test_missing_file_is_reported(tmp_path):
    directory = _write(tmp_path / "example", tmp_path)
    (directory / "assets" / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=r"file 'assets/vocab.txt' is missing\..*" + RECIPE):
        checkpoint.verify_checkpoint(directory, RECIPE)


def test_missing_directory(tmp_path):
    directory = tmp_path / "nothing"
    with pytest.raises(CheckpointError) as info:
        checkpoint.verify_checkpoint(directory, RECIPE)
    assert str(info.value) == (
        f"Checkpoint {directory}: does not exist. Re-create it with: {RECIPE}"
    )


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "manifest.json is missing"),
        ("{not json", "manifest.json cannot be read"),
        ("[1, 2]", "manifest.json holds a list, not a JSON object"),
        ('{"name": "x"}', "no valid 'files' table"),
        ('{"files": {"../x": "00"}}', "invalid file name '../x'"),
    ],
)
def test_bad_manifest(tmp_path, content, problem):
    directory = tmp_path / "example"
    directory.mkdir()
    if content is not None:
        (directory / "manifest.json").write_text(content)
    with pytest.raises(CheckpointError) as info:
        checkpoint.verify_checkpoint(directory, RECIPE)
    message = str(info.value)
    assert problem in message
    assert str(directory) in message
    assert message.endswith(f"Re-create it with: {RECIPE}")
    assert "\n" not in message


def test_read_manifest_without_recipe(tmp_path):
    with pytest.raises(CheckpointError) as info:
        checkpoint.read_manifest(tmp_path / "nothing")
    assert str(info.value) == f"Checkpoint {tmp_path / 'nothing'}: does not exist."


def test_check_config():
    checkpoint.check_config({"a": 1, "b": (2, 3)}, {"a": 1, "b": [2, 3]}, "example")
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_config(
            {"dropout": 0.1, "num_layers": 2, "units": 8},
            {"dropout": 0.2, "num_layers": 2, "seed": 1},
            "checkpoint example",
        )
    assert str(info.value) == (
        "checkpoint example was trained with a different config: "
        "dropout: expected=0.1 found=0.2; seed: expected=<missing> found=1; "
        "units: expected=8 found=<missing>"
    )
    with pytest.raises(CheckpointError, match="configs must be dicts"):
        checkpoint.check_config({}, None, "example")


def test_checkpoints_root(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    assert checkpoint.checkpoints_root() == tmp_path
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", "")
    assert checkpoint.checkpoints_root() == (
        checkpoint.pathlib.Path(checkpoint.__file__).resolve().parent / "checkpoints"
    )
    monkeypatch.delenv("KERAS_ATTENTION_ZOO_DIR")
    assert checkpoint.checkpoints_root().name == "checkpoints"


def test_atomic_write_helpers(tmp_path):
    path = tmp_path / "sub" / "result.json"
    checkpoint.atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    checkpoint.atomic_write_text(path, "café")
    assert path.read_text(encoding="utf-8") == "café"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(TypeError):
        checkpoint.atomic_write_text(path, b"bytes are not text")
    assert path.read_text(encoding="utf-8") == "café"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_written_checkpoint_folder_is_readable_by_others(tmp_path):
    directory = checkpoint.write_checkpoint(tmp_path / "model", {"w.bin": b"x"}, {})
    assert directory.stat().st_mode & 0o755 == 0o755
