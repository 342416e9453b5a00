"""Hypothesis profiles and the case counter of the property tests.

Two profiles:

- `properties` (default): few examples per property, so that the whole
  directory runs in about a minute on two CPU cores (TensorFlow, eager).
- `large`: `LARGE_FACTOR` times more examples per property. Selected by
  `HYPOTHESIS_PROFILE=large`, or by `pytest -m large tests/properties`, which
  also marks every property test `large` so that it is selected.

Every example that a property test runs, and every deterministic check, is counted
per test (see `counted`); the counts (properties, examples, checks) are printed at
the end of the run and written as JSON to `$PROPERTY_COUNTS_PATH`, by default
`<tmp>/keras_attention_property_counts.json`. docs/reliability.md quotes them.
"""

import collections
import functools
import json
import os
import tempfile
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings

LARGE_FACTOR = 20

_COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,  # the autouse Keras reset of tests/conftest.py
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
}
settings.register_profile("properties", **_COMMON)
settings.register_profile("large", **_COMMON)


class _State:
    """The active profile, the running test and the examples run per test."""

    profile = os.environ.get("HYPOTHESIS_PROFILE", "properties")
    current = None  # node id of the running test
    cases: ClassVar[collections.Counter] = collections.Counter()  # node id -> examples
    generated: ClassVar[set] = set()  # node ids of Hypothesis tests


def _use_profile(name):
    # Any other value (a profile meant for other tests) runs the default one.
    _State.profile = "large" if name == "large" else "properties"
    settings.load_profile(_State.profile)


_use_profile(_State.profile)


def examples(n):
    """`max_examples` of a property: `n` by default, `n * LARGE_FACTOR` when large."""
    return n * LARGE_FACTOR if _State.profile == "large" else n


def counted(test):
    """Count each example that a Hypothesis test runs (decorate under `@given`)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        _State.cases[_State.current] += 1
        return test(*args, **kwargs)

    return wrapper


def _large_selected(config):
    markexpr = config.getoption("markexpr", "") or ""
    return markexpr.replace(" ", "") == "large"


def pytest_configure(config):
    if _large_selected(config):
        _use_profile("large")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # Runs before `-m` deselection: with `-m large`, every property test is selected.
    if _large_selected(config):
        here = os.path.dirname(__file__)
        for item in items:
            if str(item.fspath).startswith(here):
                item.add_marker(pytest.mark.large)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _State.current = item.nodeid
    if getattr(item.obj, "is_hypothesis_test", False):
        _State.generated.add(item.nodeid)
    yield
    _State.current = None


def counts_path():
    default = os.path.join(tempfile.gettempdir(), "keras_attention_property_counts.json")
    return os.environ.get("PROPERTY_COUNTS_PATH", default)


def pytest_terminal_summary(terminalreporter):
    cases = {k: v for k, v in _State.cases.items() if k is not None}
    if not cases:
        return
    by_file = collections.Counter()
    for nodeid, n in cases.items():
        by_file[nodeid.split("::")[0]] += n
    generated = {k: v for k, v in cases.items() if k in _State.generated}
    summary = {
        "profile": _State.profile,
        "properties": len(generated),  # Hypothesis tests (parametrized items)
        "examples": sum(generated.values()),  # examples they ran
        "checks": len(cases) - len(generated),  # deterministic tests, one case each
        "cases": sum(cases.values()),  # examples + checks
        "by_file": dict(sorted(by_file.items())),
        "by_test": dict(sorted(cases.items())),
    }
    path = counts_path()
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    terminalreporter.write_sep("-", "property tests")
    terminalreporter.write_line(
        f"profile {summary['profile']}: {summary['properties']} properties ran "
        f"{summary['examples']} examples; {summary['checks']} deterministic checks; "
        f"{summary['cases']} cases tried in all (written to {path})"
    )
    for name, n in summary["by_file"].items():
        terminalreporter.write_line(f"  {name}: {n} cases")
