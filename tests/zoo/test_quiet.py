"""The command line and the recipes start without backend log lines."""

import logging
import os
import pathlib
import subprocess
import sys

import pytest

import zoo
from zoo import _quiet
from zoo import cli

REPO = pathlib.Path(__file__).resolve().parents[2]


def _clean_env():
    """The environment of a user's shell: none of the variables the tests set."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        env.pop(name, None)
    return env


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not (zoo.checkpoints_root() / "translator_en_es").is_dir(),
                    reason="checkpoint translator_en_es is not present")
def test_translate_writes_nothing_on_stderr():
    done = _run("-m", "zoo.cli", "translate", "Where is the library?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert done.stderr == ""


def test_recipes_import_tensorflow_without_log_lines():
    done = _run("-c", "import recipes, tensorflow", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.fixture
def _restore_logs(monkeypatch):
    monkeypatch.delenv(_quiet.LEVEL_VARIABLE, raising=False)
    logger = logging.getLogger("tensorflow")
    level, quieted = logger.level, _quiet._python_logger_quieted
    logger.setLevel(logging.NOTSET)
    _quiet._python_logger_quieted = False
    yield
    logger.setLevel(level)
    _quiet._python_logger_quieted = quieted


@pytest.mark.usefixtures("_restore_logs")
def test_verbose_flag_turns_backend_logs_on(capsys):
    assert cli.main(["list"]) == 0
    assert os.environ[_quiet.LEVEL_VARIABLE] == _quiet.QUIET_LEVEL
    assert logging.getLogger("tensorflow").level == logging.ERROR
    assert cli.main(["--verbose", "list"]) == 0
    assert os.environ[_quiet.LEVEL_VARIABLE] == "0"
    assert logging.getLogger("tensorflow").level == logging.NOTSET


@pytest.mark.usefixtures("_restore_logs")
def test_a_level_set_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv(_quiet.LEVEL_VARIABLE, "1")
    _quiet.quiet_start()
    assert os.environ[_quiet.LEVEL_VARIABLE] == "1"


def test_drop_log_lines_keeps_what_the_level_shows():
    text = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written "
        b"to STDERR\n"
        b"I0000 00:00:1796674923.130605    3775 port.cc:153] oneDNN custom operations "
        b"are on.\n"
        b"W1207 20:46:04.674866    3775 some_file.cc:12] a warning\n"
        b"E0000 00:00:1796675042.479635    5197 cuda_platform.cc:52] failed call to "
        b"cuInit\n"
        b"a line of the program\n"
    )
    lines = text.splitlines(keepends=True)
    assert _quiet.drop_log_lines(text, 0) == text
    assert _quiet.drop_log_lines(text, 1) == b"".join(lines[2:])
    assert _quiet.drop_log_lines(text, 3) == lines[-1]
