"""Shared fixtures of the zoo tests: the shipped models, each loaded once."""

import pytest

import zoo

_LOADED = {}


def needs_checkpoint(name):
    """Skips a test when the shipped checkpoint `name` is not present."""
    return pytest.mark.skipif(
        not (zoo.checkpoints_root() / name).is_dir(),
        reason=f"checkpoint {name} is not present",
    )


def load_once(name, directory=None):
    """`zoo.load`, with each model loaded once for the whole test session."""
    key = (name, str(directory))
    if key not in _LOADED:
        _LOADED[key] = _real_load(name, directory=directory)
    return _LOADED[key]


_real_load = zoo.load


@pytest.fixture
def cached_load(monkeypatch):
    """`zoo.load` (as the commands call it) loads each model once for the session."""
    monkeypatch.setattr(zoo, "load", load_once)
