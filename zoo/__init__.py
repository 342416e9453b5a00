"""Ready models built from keras_attention layers.

`zoo.available()` lists the models whose checkpoint is present, and
`zoo.load(name)` verifies a checkpoint against its manifest and returns the
task model (with a `translate`, `forecast`, `recommend` or `caption` method).
Checkpoints are made by the recipes; a missing or corrupt one raises
`CheckpointError` naming the recipe command that makes it.

Importing `zoo` does not import Keras or TensorFlow; the loader of a model
imports them when the model is loaded.

Example:

```python
import zoo

zoo.available()                        # e.g. ['translator_en_es']
translator = zoo.load("translator_en_es")
translator.translate(["The cat sleeps."])
```
"""

import importlib
import pathlib

from zoo.checkpoint import CheckpointError
from zoo.checkpoint import checkpoints_root
from zoo.checkpoint import verify_checkpoint
from zoo.registry import ZooEntry
from zoo.registry import entries
from zoo.registry import get_entry
from zoo.registry import register

__all__ = [
    "CheckpointError",
    "ZooEntry",
    "available",
    "checkpoints_root",
    "entries",
    "get_entry",
    "load",
    "register",
]


def available():
    """Returns the sorted names of registered models whose checkpoint folder exists.

    The folder of model `name` is `checkpoints_root() / name`; the files in it
    are checked only by `load`.
    """
    root = checkpoints_root()
    return sorted(entry.name for entry in entries() if (root / entry.name).is_dir())


def _import_loader(entry):
    module_name, _, function_name = entry.loader.partition(":")
    # keras_attention first: its oneDNN guard must run before the model's modules
    # import TensorFlow (see keras_attention/_onednn.py).
    import keras_attention  # noqa: F401

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"The loader of zoo model {entry.name!r} cannot be imported: "
            f"{entry.loader} ({e})"
        ) from e
    loader = getattr(module, function_name, None)
    if not callable(loader):
        raise ImportError(
            f"The loader of zoo model {entry.name!r} does not exist: module "
            f"{module_name!r} has no function {function_name!r}"
        )
    return loader


def load(name, directory=None):
    """Loads a zoo model from its checkpoint.

    The checkpoint is verified (manifest present, every file's sha256 as
    recorded, manifest name and task matching the entry) before the loader
    is imported and called.

    Args:
        name: a registered zoo name, see `zoo.entries()`.
        directory: the checkpoint folder; defaults to
            `checkpoints_root() / name`.

    Returns:
        What the entry's loader returns for `(directory, manifest)`: the task
        model.

    Raises:
        ValueError: `name` is not registered.
        CheckpointError: the checkpoint is missing, corrupt, or made for
            another model; the message gives the recipe command that makes it.
    """
    entry = get_entry(name)
    directory = pathlib.Path(directory) if directory is not None else checkpoints_root() / name
    # Recipes write under their workdir unless told where; a zoo checkpoint is
    # replaced only on purpose.
    recreate = f"{entry.recipe} --checkpoint_dir={directory.parent} --overwrite=true"
    manifest = verify_checkpoint(directory, recreate)
    for field in ("name", "task"):
        stored = manifest.get(field)
        wanted = getattr(entry, field)
        if stored is not None and stored != wanted:
            raise CheckpointError(
                f"Checkpoint {directory}: made for {field} {stored!r}, not {wanted!r}. "
                f"Re-create it with: {recreate}"
            )
    loader = _import_loader(entry)
    return loader(directory, manifest)
