"""The list of zoo models: name, task, how to load it and which recipe makes it.

Each model is a `ZooEntry`. The built-in entries are the `_BUILTIN` list below;
add a line there for a new model. Loaders are named as `"module.path:function"`
strings and imported only when a model is loaded, so importing the registry
stays cheap. A loader is called as `loader(directory, manifest)` with the
verified checkpoint folder (a `pathlib.Path`) and its manifest (a dict) and
returns the ready task model.

Example:

```python
from zoo import registry

registry.register(registry.ZooEntry(
    name="my_forecaster",
    task="forecast",
    loader="my_package.forecaster:load_forecaster",
    recipe="python -m my_package.train_forecaster",
    description="Transformer forecaster for hourly load.",
))
registry.get_entry("my_forecaster").recipe
```
"""

import dataclasses
import re

TASKS = ("translate", "forecast", "recommend", "caption")

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_LOADER_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    Args:
        name: the zoo name, lower case letters, digits and `_`, e.g.
            `"translator_en_es"`; also the checkpoint folder name.
        task: one of `"translate"`, `"forecast"`, `"recommend"`, `"caption"`.
        loader: `"module.path:function"`, imported when the model is loaded.
        recipe: the command that trains the checkpoint, shown in errors.
        description: one line for listings.
    """

    name: str
    task: str
    loader: str
    recipe: str
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                "`name` must be lower case letters, digits and '_', starting with a "
                f"letter. Received: name={self.name!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={self.task!r}")
        if not isinstance(self.loader, str) or not _LOADER_PATTERN.match(self.loader):
            raise ValueError(
                "`loader` must be a 'module.path:function' string. "
                f"Received: loader={self.loader!r}"
            )
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise ValueError(
                f"`recipe` must be a non-empty command string. Received: recipe={self.recipe!r}"
            )
        if not isinstance(self.description, str):
            raise ValueError(
                f"`description` must be a string. Received: description={self.description!r}"
            )


_BUILTIN = [
    ZooEntry(
        name="translator_en_es",
        task="translate",
        loader="zoo.translator.translator:load_translator",
        recipe="python -m recipes.train_translator",
        description="English to Spanish Transformer translator, trained on the "
        "Tatoeba sentence pairs (short everyday sentences).",
    ),
    ZooEntry(
        name="translator_en_es_bahdanau",
        task="translate",
        loader="zoo.translator.translator:load_translator",
        recipe="python -m recipes.train_translator",
        description="English to Spanish GRU translator with Bahdanau attention, "
        "trained on the Tatoeba sentence pairs (a baseline).",
    ),
    ZooEntry(
        name="captioner_tuxpaint_openclipart",
        task="caption",
        loader="zoo.captioner.captioner:load_captioner",
        recipe="python -m recipes.train_captioner --scst_epochs=12",
        description="Image captioner (hybrid ViT + Transformer decoder), trained on "
        "clip art: Tux Paint stamps and Openclipart drawings, not photographs (it "
        "prints each image's distance from them; it flags only some photos).",
    ),
    ZooEntry(
        name="recommender_ml100k_sasrec",
        task="recommend",
        loader="zoo.recommender.recommender:load_recommender",
        recipe="python -m recipes.train_recommender --jit_compile=false",
        description="SASRec next-movie recommender, trained on MovieLens-100K "
        "ratings (1990s films).",
    ),
    ZooEntry(
        name="recommender_ml100k_bst",
        task="recommend",
        loader="zoo.recommender.recommender:load_recommender",
        recipe="python -m recipes.train_recommender --model=bst --jit_compile=false",
        description="BST-style recommender (genres, user profile), trained on "
        "MovieLens-100K ratings (1990s films).",
    ),
    ZooEntry(
        name="recommender_retail_sasrec",
        task="recommend",
        loader="zoo.recommender.recommender:load_recommender",
        recipe="python -m recipes.train_recommender --dataset=online-retail --epochs=3 "
        "--batch_size=64 --learning_rate=0.003 --warmup_steps=50 --dropout=0.2 "
        "--max_windows=2 --knn_neighbors=50,200 --bpr_regularization=0.001 "
        "--bpr_epochs=20 --jit_compile=false",
        description="SASRec next-product recommender, trained on UCI Online Retail "
        "II (a UK gift retailer's orders).",
    ),
    ZooEntry(
        name="forecaster_electricity",
        task="forecast",
        loader="zoo.forecaster.forecaster:load_forecaster",
        recipe="python -m recipes.train_forecaster --dataset=electricity",
        description="Patch Transformer forecaster (24 h, 168 h), trained on one "
        "hourly series: the mean load of 321 electricity clients, 2012-2014 (it "
        "warns when a history is unlike it).",
    ),
    ZooEntry(
        name="forecaster_traffic",
        task="forecast",
        loader="zoo.forecaster.forecaster:load_forecaster",
        recipe="python -m recipes.train_forecaster --dataset=traffic",
        description="Patch Transformer forecaster (24 h, 168 h), trained on one "
        "hourly series: San Francisco road occupancy (it warns when a history is "
        "unlike it).",
    ),
    ZooEntry(
        name="forecaster_beijing_pm25",
        task="forecast",
        loader="zoo.forecaster.forecaster:load_forecaster",
        recipe="python -m recipes.train_forecaster --dataset=beijing_pm25",
        description="Patch Transformer forecaster (24 h, 168 h), trained on hourly "
        "Beijing PM2.5 with six weather channels, 2010-2014 (it warns when a history "
        "is unlike it).",
    ),
]

_REGISTRY = {}


def register(entry, *, replace=False):
    """Adds a model to the zoo.

    Registering an entry equal to the one already under its name does nothing.

    Args:
        entry: a `ZooEntry`.
        replace: allow replacing a different entry of the same name.

    Returns:
        `entry`.
    """
    if not isinstance(entry, ZooEntry):
        raise TypeError(
            f"`entry` must be a ZooEntry. Received: entry of type {type(entry).__name__}"
        )
    current = _REGISTRY.get(entry.name)
    if current is not None and current != entry and not replace:
        raise ValueError(
            f"A different zoo model is already registered as {entry.name!r}; pass "
            f"replace=True to replace it. Received: name={entry.name!r}"
        )
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name):
    """Removes a model from the zoo (unknown names raise `ValueError`)."""
    get_entry(name)
    del _REGISTRY[name]


def get_entry(name):
    """Returns the `ZooEntry` registered as `name`.

    Raises:
        ValueError: for an unknown name, listing the available names.
    """
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        names = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ValueError(f"Unknown zoo model. Available: {names}. Received: name={name!r}")
    return entry


def entries():
    """Returns all registered entries, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


for _entry in _BUILTIN:
    register(_entry)
del _entry
