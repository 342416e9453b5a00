"""The `keras-attention` command line (also `python -m zoo.cli`).

Built-in subcommand:

- `keras-attention list`: a table of the zoo models, whether their checkpoint
  is present, their main metric and the recipe command that makes them.

Other subcommands come from the modules named in `_COMMAND_MODULES`. Each such
module defines `add_parser(subparsers)`, which adds its parser with
`subparsers.add_parser(...)` and sets the function to run with
`parser.set_defaults(func=...)`. The function takes the parsed
`argparse.Namespace` and returns an exit code (`None` means 0). Keep module
import cheap: import Keras or TensorFlow inside the function, not at the top of
the module, so that `keras-attention list` stays fast. A module that cannot be
imported is skipped with a one-line warning on stderr.

Errors the user can cause (`CheckpointError`, `ValueError`,
`FileNotFoundError`, bad arguments) are printed as one line `error: ...` on
stderr and give exit code 2.

TensorFlow's log lines are hidden (`zoo._quiet`); `keras-attention --verbose
COMMAND ...` shows them.

Example:

```
$ keras-attention list
$ python -m zoo.cli list
```
"""

import argparse
import importlib
import sys
import textwrap
from importlib import metadata

from zoo import _quiet
from zoo import checkpoint
from zoo import registry

_COMMAND_MODULES = [
    "zoo.translator.cli",
    "zoo.captioner.cli",
    "zoo.recommender.cli",
    "zoo.forecaster.cli",
    "zoo.explain_cli",
]

_USER_ERRORS = (checkpoint.CheckpointError, ValueError, FileNotFoundError)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    verbs = {}  # the top-level parser's subcommand parsers, by name (set by build_parser)

    # argparse prints the usage and exits on bad arguments; report one line instead.
    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(self, args=None, namespace=None):
        # Unknown arguments after a subcommand are reported by the subcommand's own
        # parser, so that the message points to its --help.
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self.verbs.get(getattr(namespace, "command", None), self)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace


def positive_int(text):
    """argparse type of options such as --beam_size: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


def _one_line(text):
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _main_metric(manifest):
    metrics = manifest.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return "-"
    key = manifest.get("main_metric")
    if key not in metrics:
        key = min(metrics, key=str)
    return f"{key}={_format_value(metrics[key])}"


def _list_rows():
    root = checkpoint.checkpoints_root()
    rows = []
    for entry in registry.entries():
        directory = root / entry.name
        present = directory.is_dir()
        metric = "-"
        if present:
            try:
                metric = _main_metric(checkpoint.read_manifest(directory))
            except checkpoint.CheckpointError:
                metric = "(no readable manifest)"
        rows.append((entry.name, entry.task, "yes" if present else "no", metric, entry.recipe))
    return root, rows


def print_table(header, rows, right=()):
    """Prints `header` and `rows` (sequences of str) as aligned columns; the
    columns whose index is in `right` are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.rjust(width) if i in right else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())


def _run_list(args):
    root, rows = _list_rows()
    print_table(("NAME", "TASK", "PRESENT", "METRIC", "RECIPE"), rows)
    print(f"checkpoints folder: {root}")
    return 0


def _models_epilog():
    lines = ["models, and what each was trained on ('keras-attention list' shows which "
             "are installed):"]
    for entry in registry.entries():
        lines.append(f"  {entry.name}")
        lines += textwrap.wrap(entry.description, 84, initial_indent="      ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def build_parser():
    """Returns the `keras-attention` argument parser with every subcommand."""
    parser = _Parser(
        prog="keras-attention",
        description="Models of the keras-attention zoo.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--verbose", action="store_true",
                        help="show the backend's log lines (TensorFlow's are hidden by "
                             "default)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    parser.verbs = subparsers.choices
    list_parser = subparsers.add_parser(
        "list", help="list the zoo models and whether their checkpoints are present"
    )
    list_parser.set_defaults(func=_run_list)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:  # one broken model must not take the others down
            print(f"warning: commands of {module_name} are unavailable: {e}", file=sys.stderr)
            continue
        module.add_parser(subparsers)
    return parser


def _version():
    try:
        return metadata.version("keras-attention")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def main(argv=None):
    """Runs the command line and returns the exit code.

    Args:
        argv: the arguments without the program name; defaults to
            `sys.argv[1:]`.

    Returns:
        0 on success, 2 on an error the user caused (printed as one line
        `error: ...` on stderr), 130 when interrupted.
    """
    _quiet.quiet_start()  # before anything imports TensorFlow
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.verbose:
            _quiet.quiet_start(verbose=True)
        code = args.func(args)
    except SystemExit as e:  # --help, --version, or sys.exit() in a command
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(f"error: {_one_line(e.code)}", file=sys.stderr)
        return 2
    except (_UsageError, *_USER_ERRORS) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
