"""Checkpoint directories of the model zoo: atomic writing, manifest, verification.

A zoo checkpoint is a directory holding the files a model needs (weights,
vocabularies, ...) and a `manifest.json` that describes them. It is written by
a recipe with `write_checkpoint` and checked with `verify_checkpoint` before
anything in it is loaded.

Manifest fields (a JSON object, written with sorted keys):

- `name`: the zoo name of the checkpoint, e.g. `"translator_en_es"`.
- `task`: `"translate"`, `"forecast"`, `"recommend"` or `"caption"`.
- `recipe`: the command that made it, e.g. `"python -m recipes.train_translator"`.
- `config`: the full recipe config (a dict) the model was trained with.
- `data`: `{"source", "licence", "split", "split_seed"}`: where the training data
  came from, under which licence, how it was split and with which seed.
- `metrics`: `{metric_name: value}` measured on the held-out split.
- `main_metric` (optional): the key of `metrics` that `keras-attention list`
  shows; without it the list shows the first metric in sorted order.
- `baselines`: `{baseline_name: {metric_name: value}}`, the same metrics for
  simple reference models on the same split.
- `training_time_s`: wall-clock training time in seconds.
- `keras_version`, `backend`: the Keras version and backend used for training.
- `created`: ISO date of creation, e.g. `"2025-01-31"`.
- `files`: `{relative_path: sha256_hex}`, filled in by `write_checkpoint`.

Example:

```python
from zoo import checkpoint

directory = checkpoint.checkpoints_root() / "translator_en_es"
checkpoint.write_checkpoint(
    directory,
    {"model.weights.h5": "/tmp/run/model.weights.h5", "vocab.txt": b"..."},
    {"name": "translator_en_es", "task": "translate", "config": config, ...},
)
manifest = checkpoint.verify_checkpoint(
    directory, "python -m recipes.train_translator"
)
checkpoint.check_config(config, manifest["config"], "translator_en_es")
```
"""

import hashlib
import json
import os
import pathlib
import shutil
import tempfile

MANIFEST_NAME = "manifest.json"
ENV_VAR = "KERAS_ATTENTION_ZOO_DIR"

_HASH_PREFIX = 12
_MISSING = object()


class CheckpointError(RuntimeError):
    """A zoo checkpoint is missing, corrupt or does not match what is asked for."""


def checkpoints_root():
    """Returns the folder that holds the zoo checkpoints.

    It is `$KERAS_ATTENTION_ZOO_DIR` when that variable is set and not empty,
    else the `checkpoints` folder next to this module.

    Returns:
        A `pathlib.Path`.
    """
    value = os.environ.get(ENV_VAR, "")
    if value:
        return pathlib.Path(value).expanduser()
    return pathlib.Path(__file__).resolve().parent / "checkpoints"


def zoo_roots():
    """Returns the folders whose checkpoints are zoo models.

    They are the `checkpoints` folder shipped next to this module and, when it is
    set, `$KERAS_ATTENTION_ZOO_DIR`. `write_checkpoint` never replaces a checkpoint
    in them unless told to, and never writes a smoke run's model into them.

    Returns:
        A list of resolved `pathlib.Path`s.
    """
    packaged = pathlib.Path(__file__).resolve().parent / "checkpoints"
    return list(dict.fromkeys([packaged, checkpoints_root().resolve()]))


def zoo_root_of(directory):
    """The zoo folder (see `zoo_roots`) that holds `directory`, or None."""
    path = pathlib.Path(directory).expanduser().resolve()
    for root in zoo_roots():
        if path == root or root in path.parents:
            return root
    return None


def check_destination(directory, *, overwrite=False, smoke=False):
    """Refuses a checkpoint destination that would damage a zoo model.

    Args:
        directory: the checkpoint folder about to be written.
        overwrite: whether an existing zoo checkpoint may be replaced.
        smoke: whether the checkpoint comes from a smoke run, whose model must
            never land in the zoo.

    Raises:
        CheckpointError: `directory` lies in a zoo folder and the run is a smoke
            run, or a checkpoint is already there and `overwrite` is False.
    """
    root = zoo_root_of(directory)
    if root is None:
        return
    if smoke:
        raise CheckpointError(
            f"A smoke run never writes into the zoo folder {root}; give a --checkpoint_dir "
            f"outside it. Received: checkpoint folder {directory}"
        )
    if os.path.lexists(directory) and not overwrite:
        raise CheckpointError(
            f"{directory} is a zoo checkpoint; pass --overwrite=true to replace it on "
            "purpose, or give another --checkpoint_dir."
        )


def sha256_file(path, chunk_size=1 << 20):
    """Returns the hex sha256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path):
    # Makes a rename inside `path` durable; not possible on every platform.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_text(obj):
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` so that readers see the old or the new file.

    The text goes to a temporary file in the same folder, is flushed to disk,
    and replaces `path` with `os.replace`. Missing parent folders are created.

    Args:
        path: file to write.
        text: the new content, a `str`.

    Returns:
        `path` as a `pathlib.Path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path, obj):
    """Writes `obj` as JSON (sorted keys, indent 2) with `atomic_write_text`."""
    return atomic_write_text(path, _json_text(obj))


def _check_relative_name(relname):
    if not isinstance(relname, str) or not relname:
        raise ValueError(
            f"Checkpoint file names must be non-empty strings. Received: name={relname!r}"
        )
    parts = pathlib.PurePosixPath(relname).parts
    if (
        relname.startswith("/")
        or "\\" in relname
        or any(part in ("", ".", "..") for part in parts)
        or relname != "/".join(parts)
    ):
        raise ValueError(
            "Checkpoint file names must be relative paths inside the checkpoint, "
            f"using '/' and no '.' or '..'. Received: name={relname!r}"
        )
    if relname == MANIFEST_NAME:
        raise ValueError(
            f"{MANIFEST_NAME!r} is written by write_checkpoint itself. Received: name={relname!r}"
        )


def _write_one(target, source):
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, (bytes, bytearray, memoryview)):
        with open(target, "wb") as f:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
    elif isinstance(source, (str, os.PathLike)):
        shutil.copyfile(source, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
    else:
        raise TypeError(
            "Checkpoint file sources must be a path (str or os.PathLike) or bytes. "
            f"Received: source of type {type(source).__name__}"
        )


def write_checkpoint(directory, files, manifest, *, overwrite=False, smoke=False):
    """Writes a complete checkpoint directory atomically.

    Every file is first written into a temporary sibling of `directory`, its
    sha256 recorded in `manifest["files"]`, and `manifest.json` written next to
    them. The finished folder then replaces `directory` by renaming (an existing
    `directory` is moved aside first and deleted afterwards). If anything fails,
    the temporary folder is removed and `directory` is left as it was: a
    half-written checkpoint is never visible under `directory`.

    Args:
        directory: the checkpoint folder to create or replace.
        files: dict from relative file name (may contain `/`) to its content:
            a path to copy (str or `os.PathLike`; a folder is copied with all
            the files in it) or `bytes`.
        manifest: the manifest fields (see the module docstring), JSON
            serializable. Its `files` entry is overwritten.
        overwrite: allow replacing an existing checkpoint in a zoo folder
            (`zoo_roots`). Outside those folders an existing checkpoint is
            always replaced.
        smoke: the model comes from a smoke run; it is refused in a zoo folder.

    Returns:
        `directory` as a `pathlib.Path`.

    Raises:
        CheckpointError: from `check_destination`: the destination is in a zoo
            folder and holds a checkpoint (without `overwrite`), or `smoke` is set.
    """
    directory = pathlib.Path(directory)
    if not isinstance(files, dict):
        raise TypeError(f"`files` must be a dict. Received: files of type {type(files).__name__}")
    if not isinstance(manifest, dict):
        raise TypeError(
            f"`manifest` must be a dict. Received: manifest of type {type(manifest).__name__}"
        )
    for relname in files:
        _check_relative_name(relname)
    check_destination(directory, overwrite=overwrite, smoke=smoke)

    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a checkpoint is readable like a file
    aside = None
    try:
        hashes = {}
        for relname, source in files.items():
            if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
                for sub in sorted(pathlib.Path(source).rglob("*")):
                    if sub.is_file():
                        name = f"{relname}/{sub.relative_to(source).as_posix()}"
                        _write_one(staging / name, sub)
                        hashes[name] = sha256_file(staging / name)
            else:
                _write_one(staging / relname, source)
                hashes[relname] = sha256_file(staging / relname)
        full_manifest = dict(manifest)
        full_manifest["files"] = hashes
        atomic_write_text(staging / MANIFEST_NAME, _json_text(full_manifest))
        _fsync_dir(staging)

        if os.path.lexists(directory):
            aside = pathlib.Path(
                tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=parent)
            ) / "old"
            os.replace(directory, aside)
        try:
            os.replace(staging, directory)
        except BaseException:
            if aside is not None:
                os.replace(aside, directory)
                aside = None
            raise
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside.parent, ignore_errors=True)
    return directory


def _fail(directory, problem, recipe_command):
    message = f"Checkpoint {directory}: {problem}."
    if recipe_command:
        message += f" Re-create it with: {recipe_command}"
    raise CheckpointError(message)


def read_manifest(directory, *, recipe_command=None):
    """Reads `manifest.json` of a checkpoint without checking the files.

    Args:
        directory: the checkpoint folder.
        recipe_command: optional command shown in the error message as the way
            to re-create the checkpoint.

    Returns:
        The manifest as a dict.

    Raises:
        CheckpointError: the folder or manifest is missing or not a JSON object.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        _fail(directory, "does not exist", recipe_command)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        _fail(directory, f"{MANIFEST_NAME} is missing", recipe_command)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        detail = " ".join(str(e).split())
        _fail(directory, f"{MANIFEST_NAME} cannot be read ({detail})", recipe_command)
    if not isinstance(manifest, dict):
        _fail(
            directory,
            f"{MANIFEST_NAME} holds a {type(manifest).__name__}, not a JSON object",
            recipe_command,
        )
    return manifest


def verify_checkpoint(directory, recipe_command):
    """Checks a checkpoint against its manifest before anything is loaded.

    Every file listed in `manifest["files"]` must exist and have the recorded
    sha256. Files not listed are ignored.

    Args:
        directory: the checkpoint folder.
        recipe_command: the command that makes this checkpoint; every error
            message ends with "Re-create it with: <recipe_command>".

    Returns:
        The manifest as a dict.

    Raises:
        CheckpointError: naming the checkpoint and the exact problem (missing
            folder or manifest, unreadable JSON, missing file, hash mismatch).
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory, recipe_command=recipe_command)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        _fail(
            directory,
            f"{MANIFEST_NAME} has no valid 'files' table (relative name -> sha256)",
            recipe_command,
        )
    problems = []
    for relname, expected in sorted(files.items()):
        try:
            _check_relative_name(relname)
        except ValueError:
            problems.append(f"manifest lists an invalid file name {relname!r}")
            continue
        path = directory / relname
        if not path.is_file():
            problems.append(f"file '{relname}' is missing")
            continue
        actual = sha256_file(path)
        if actual != expected.lower():
            problems.append(
                f"file '{relname}' has sha256 {actual[:_HASH_PREFIX]}..., "
                f"expected {expected[:_HASH_PREFIX]}..."
            )
    if problems:
        _fail(directory, "corrupt: " + "; ".join(problems), recipe_command)
    return manifest


def _normalise(value):
    # Compares configs the way they come back from JSON (tuples are lists).
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return value


def check_config(expected, found, what):
    """Refuses a checkpoint trained with a different config.

    Values are compared after a JSON round trip, so `(1, 2)` equals `[1, 2]`.

    Args:
        expected: the config the caller needs.
        found: the config stored in the checkpoint manifest.
        what: names the checkpoint in the error message.

    Raises:
        CheckpointError: listing every differing key as
            `key: expected=... found=...` (`<missing>` for an absent key).
    """
    if not isinstance(expected, dict) or not isinstance(found, dict):
        raise CheckpointError(
            f"{what}: configs must be dicts. Received: expected of type "
            f"{type(expected).__name__}, found of type {type(found).__name__}"
        )
    differences = []
    for key in sorted(set(expected) | set(found), key=str):
        a = expected.get(key, _MISSING)
        b = found.get(key, _MISSING)
        if a is _MISSING or b is _MISSING or _normalise(a) != _normalise(b):
            shown_a = "<missing>" if a is _MISSING else repr(a)
            shown_b = "<missing>" if b is _MISSING else repr(b)
            differences.append(f"{key}: expected={shown_a} found={shown_b}")
    if differences:
        raise CheckpointError(
            f"{what} was trained with a different config: " + "; ".join(differences)
        )
