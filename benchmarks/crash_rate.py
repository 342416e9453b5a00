"""Run one command many times, each in a fresh process, and count native aborts.

Used for the oneDNN heap-corruption investigation (`docs/reliability.md`): a crash
that happens in one run in ten needs tens of fresh runs to tell from zero.

    python -m benchmarks.crash_rate --runs=60 --env=TF_ENABLE_ONEDNN_OPTS=1 -- \
        python -m recipes.quickstart --smoke --jit_compile=false --workdir={workdir}

`{workdir}` in the command becomes a new empty folder for each run. Each run's exit
status is recorded: 0, a Python error (a positive status), or a signal (SIGABRT from
glibc's heap checks, SIGSEGV); the first lines glibc prints are kept for aborts.
The summary is printed as one JSON line (and appended to `--output` if given).
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile

HEAP_MARKERS = ("corrupted", "malloc", "free()", "double free", "Segmentation fault")


def run_once(command, env):
    """(status name, first heap message or '') for one fresh run of `command`."""
    with tempfile.TemporaryDirectory() as workdir:
        argv = [part.replace("{workdir}", os.path.join(workdir, "w")) for part in command]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    code = proc.returncode
    if code < 0:
        status = signal.Signals(-code).name
    elif code in (128 + signal.SIGABRT, 128 + signal.SIGSEGV):
        status = signal.Signals(code - 128).name
    else:
        status = "ok" if code == 0 else f"exit {code}"
    message = next(
        (line.strip() for line in proc.stderr.splitlines()
         if any(marker in line for marker in HEAP_MARKERS)),
        "",
    )
    if status.startswith("exit") and not message:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return status, message


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE set for every run (repeatable)")
    parser.add_argument("--label", default="", help="name of this variant in the summary")
    parser.add_argument("--output", default="", help="append the JSON summary to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --. Received: no command")
    env = dict(os.environ)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env takes NAME=VALUE. Received: --env={item}")
        env[name] = value
    counts = collections.Counter()
    messages = collections.Counter()
    for i in range(args.runs):
        status, message = run_once(command, env)
        counts[status] += 1
        if message and status != "ok":
            messages[message] += 1
        print(f"run {i + 1}/{args.runs}: {status} {message}", file=sys.stderr, flush=True)
    summary = {
        "label": args.label,
        "command": " ".join(command),
        "env": args.env,
        "runs": args.runs,
        "counts": dict(counts),
        "messages": dict(messages),
    }
    line = json.dumps(summary)
    print(line)
    if args.output:
        with open(args.output, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
