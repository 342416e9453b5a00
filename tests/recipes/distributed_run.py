"""Runs one process of a distributed recipe run for the tests and saves what it ends
with: `python -m tests.recipes.distributed_run OUT RECIPE [--key=value ...]` runs
`recipes.RECIPE.main(args)` and writes `OUT/process-<index>.npz` (the weights of the
model `recipes.training.fit` returned, by variable path) and
`OUT/process-<index>.json` (the process count and `main`'s result, if a dict).

The helpers below start such processes on localhost with free ports, for the
TensorFlow (TF_CONFIG) and JAX (KERAS_DISTRIBUTION_*) backends.
"""

import importlib
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(count):
    """`count` distinct TCP ports free on localhost right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def process_environments(backend, count):
    """One environment per process of a `count`-process group on localhost."""
    ports = free_ports(count)
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend,
                TF_ENABLE_ONEDNN_OPTS="0")
    base.pop("TF_CONFIG", None)
    envs = []
    for index in range(count):
        env = dict(base)
        if backend == "tensorflow":
            cluster = {"worker": [f"localhost:{port}" for port in ports]}
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}})
        else:
            env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{ports[0]}",
                       KERAS_DISTRIBUTION_NUM_PROCESSES=str(count),
                       KERAS_DISTRIBUTION_PROCESS_ID=str(index))
        envs.append(env)
    return envs


def start(out, recipe, args, env, log_path):
    """Starts one process; its output goes to `log_path`."""
    log = open(log_path, "w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.recipes.distributed_run", str(out), recipe, *args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def stop(processes):
    """Kills whichever of `processes` still run and reaps them all."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def run_group(out, recipe, args, backend, count, timeout, log_dir):
    """Runs a `count`-process group to the end; returns the exit codes and logs."""
    processes = [start(out, recipe, args, env, os.path.join(log_dir, f"log-{i}.txt"))
                 for i, env in enumerate(process_environments(backend, count))]
    try:
        codes = [process.wait(timeout=timeout) for process in processes]
    finally:
        stop(processes)
    logs = []
    for i in range(count):
        with open(os.path.join(log_dir, f"log-{i}.txt"), encoding="utf-8") as f:
            logs.append(f.read())
    return codes, logs


def main(argv):
    out, recipe, args = argv[0], argv[1], argv[2:]
    from recipes import training

    fitted = []
    fit = training.fit

    def recording_fit(*fit_args, **fit_kwargs):
        model, info = fit(*fit_args, **fit_kwargs)
        fitted.append(model)
        return model, info

    training.fit = recording_fit
    module = importlib.import_module(f"recipes.{recipe}")
    result = module.main(args)

    import numpy as np

    index = training.process_index()
    model = fitted[-1]
    np.savez(os.path.join(out, f"process-{index}.npz"),
             **{w.path: np.asarray(w.numpy() if hasattr(w, "numpy") else w)
                for w in model.weights})
    payload = {"process_count": training.process_count(),
               "result": result if isinstance(result, dict) else None}
    with open(os.path.join(out, f"process-{index}.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
