"""A quiet process start for the command line and the recipes.

TensorFlow's C++ runtime logs through absl. Most of its lines obey
`TF_CPP_MIN_LOG_LEVEL` (0 shows all, 1 hides INFO, 2 also WARNING, 3 also
ERROR), but TensorFlow 2.21 prints the ones written while its shared libraries
load (the oneDNN notice and "Could not find cuda drivers", once for each of the
two libraries that carry them, each after absl's "All log messages before
absl::InitializeLog()" line) whatever the variable says. `quiet_start()` sets the
level to 3 unless the environment already sets one, hides the warnings of
TensorFlow's Python logger at levels 2 and 3 (unless its level is set), and makes
the process's first `import tensorflow` hold back those load-time lines when the
level hides them; anything else written to stderr during that import is passed on.

Call it before anything imports TensorFlow (Keras imports it when it is the
backend). It imports neither, so modules that call it stay cheap to import.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"
VERBOSE_LEVEL = "0"

# An absl log line: severity, MMDD hh:mm:ss.micros (before absl is initialised the
# seconds count from the epoch: "I0000 00:00:1796674923.130605"), thread id, file:line].
_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"

_python_logger_quieted = False  # quiet_start set the "tensorflow" logger's level


def quiet_start(verbose=False):
    """Sets up the backend logs before TensorFlow is imported.

    Args:
        verbose: show every backend log line (`TF_CPP_MIN_LOG_LEVEL=0`, also when
            the environment sets another level). Otherwise the level is 3 unless
            the environment already sets one.
    """
    global _python_logger_quieted
    # TensorFlow's Python logger (e.g. "triggered tf.function retracing" when a
    # recipe trains several models) hides warnings too, unless its level is set.
    python_logger = logging.getLogger("tensorflow")
    if verbose:
        os.environ[LEVEL_VARIABLE] = VERBOSE_LEVEL
        if _python_logger_quieted:
            python_logger.setLevel(logging.NOTSET)
            _python_logger_quieted = False
    else:
        os.environ.setdefault(LEVEL_VARIABLE, QUIET_LEVEL)
        if min_log_level() >= 2 and python_logger.level == logging.NOTSET:
            python_logger.setLevel(logging.ERROR)
            _python_logger_quieted = True
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietImport())


def min_log_level():
    """The level `TF_CPP_MIN_LOG_LEVEL` sets (0 when unset or not a number)."""
    try:
        return int(os.environ.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


def drop_log_lines(data, level):
    """`data` (bytes) without the absl log lines below `level`.

    absl's "All log messages before absl::InitializeLog()" line goes when `level`
    hides warnings or more; every other line is kept.
    """
    kept = []
    for line in data.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match and _SEVERITY[match.group(1)] < level:
            continue
        if line.startswith(_ABSL_PREAMBLE) and level >= 1:
            continue
        kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def held_stderr():
    """Holds back what is written to file descriptor 2 inside the block, then
    writes it out without the log lines that `TF_CPP_MIN_LOG_LEVEL` hides."""
    level = min_log_level()
    try:
        saved = os.dup(2) if level > 0 else None
    except OSError:  # no stderr to hold
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as held:
        _flush_stderr()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = drop_log_lines(held.read(), level)
            while rest:
                rest = rest[os.write(2, rest):]


def _flush_stderr():
    if sys.stderr is not None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class _QuietLoader:
    """Runs another loader's `exec_module` inside `held_stderr()`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with held_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietImport:
    """Meta-path finder: finds `tensorflow` with the other finders and wraps its
    loader in `_QuietLoader`; every other name is left to the other finders."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None
