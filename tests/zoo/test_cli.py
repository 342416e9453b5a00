import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from zoo import checkpoint
from zoo import cli
from zoo.checkpoint import CheckpointError


def _raise(args):
    errors = {
        "checkpoint": CheckpointError("Checkpoint /x: does not exist.\nRe-create it with: cmd"),
        "value": ValueError("bad value. Received: k=1"),
        "file": FileNotFoundError(2, "No such file or directory", "/nowhere"),
        "exit": SystemExit("stopped by the command"),
    }
    if args.kind == "ok":
        print(f"ran with {args.kind}")
        return None
    if args.kind == "three":
        return 3
    raise errors[args.kind]


def add_parser(subparsers):
    """Command hook used by the tests, as a zoo model module would define it."""
    parser = subparsers.add_parser("fake", help="a test command")
    parser.add_argument("kind")
    parser.set_defaults(func=_raise)


@pytest.fixture
def zoo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_command(monkeypatch):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", [__name__])


def test_list(zoo_dir, capsys):
    checkpoint.write_checkpoint(
        zoo_dir / "translator_en_es",
        {"w.bin": b"x"},
        {"metrics": {"bleu": 21.456789, "chrf": 40.0}, "main_metric": "bleu"},
    )
    (zoo_dir / "translator_en_es_bahdanau").mkdir()  # present but no manifest
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "PRESENT", "METRIC", "RECIPE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["translator_en_es"].split() == [
        "translator_en_es",
        "translate",
        "yes",
        "bleu=21.46",
        "python",
        "-m",
        "recipes.train_translator",
    ]
    assert re.search(r" yes +\(no readable manifest\) ", rows["translator_en_es_bahdanau"])
    assert rows["translator_en_es_bahdanau"].endswith("python -m recipes.train_translator")
    assert lines[-1] == f"checkpoints folder: {zoo_dir}"
    # Columns line up.
    translators = [rows["translator_en_es"], rows["translator_en_es_bahdanau"]]
    assert len({lines[0].index("TASK")} | {row.index("translate") for row in translators}) == 1


def test_list_metric_choice(zoo_dir, capsys):
    checkpoint.write_checkpoint(
        zoo_dir / "translator_en_es", {}, {"metrics": {"loss": 1.5, "bleu": 3}}
    )
    assert cli.main(["list"]) == 0
    row = _row(capsys.readouterr().out, "translator_en_es")
    assert row.split()[:4] == ["translator_en_es", "translate", "yes", "bleu=3"]


def test_list_absent(zoo_dir, capsys):
    assert cli.main(["list"]) == 0
    row = _row(capsys.readouterr().out, "translator_en_es")
    assert row.split()[:4] == ["translator_en_es", "translate", "no", "-"]


def _row(out, name):
    """The `list` output line of model `name`."""
    return next(line for line in out.splitlines() if line.split()[:1] == [name])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "error: argument COMMAND: invalid choice: 'nope'"),
        ([], "error: the following arguments are required: COMMAND"),
        (["list", "--bad"], "error: unrecognized arguments: --bad"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_help_and_version(capsys):
    assert cli.main(["--help"]) == 0
    assert "list" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("keras-attention ")


@pytest.mark.parametrize(
    "kind, line",
    [
        ("checkpoint", "error: Checkpoint /x: does not exist. Re-create it with: cmd\n"),
        ("value", "error: bad value. Received: k=1\n"),
        ("file", "error: [Errno 2] No such file or directory: '/nowhere'\n"),
        ("exit", "error: stopped by the command\n"),
    ],
)
def test_command_errors(fake_command, kind, line, capsys):
    assert cli.main(["fake", kind]) == 2
    _, err = capsys.readouterr()
    assert err == line


def test_command_module_hook(fake_command, capsys):
    assert cli.main(["fake", "ok"]) == 0
    assert capsys.readouterr().out == "ran with ok\n"
    assert cli.main(["fake", "three"]) == 3


def test_broken_command_module(monkeypatch, zoo_dir, capsys):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ["tests.zoo.no_such_module", __name__])
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("NAME")
    assert err.startswith("warning: commands of tests.zoo.no_such_module are unavailable: ")
    assert err.count("\n") == 1
    assert cli.main(["fake", "ok"]) == 0


def test_other_errors_are_not_hidden(fake_command, monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(sys.modules[__name__], "_raise", broken)
    with pytest.raises(KeyError):
        cli.main(["fake", "ok"])


def _script():
    script = pathlib.Path(sys.executable).parent / "keras-attention"
    if script.exists():
        return str(script)
    found = shutil.which("keras-attention")
    if found is None:
        pytest.fail("keras-attention is not installed; run `pip install -e . --no-deps`")
    return found


def test_console_script(tmp_path):
    env = dict(os.environ, KERAS_ATTENTION_ZOO_DIR=str(tmp_path))
    result = subprocess.run(
        [_script(), "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == "NAME"
    assert "translator_en_es" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: argument COMMAND: invalid choice: 'nope'")
    assert result.stderr.count("\n") == 1
