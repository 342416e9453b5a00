"""The shipped checkpoint: loads offline through the zoo and captions real stamps."""

import pathlib

import numpy as np
import pytest

import zoo
from tests.zoo.captioner.helpers import requires_stamps
from zoo import checkpoint
from zoo.captioner import data
from zoo.captioner.cli import DEFAULT_MODEL
from zoo.captioner.metrics import cider_d

ENTRY = zoo.get_entry(DEFAULT_MODEL)
DIRECTORY = checkpoint.checkpoints_root() / DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DIRECTORY.is_dir(),
                                reason=f"the checkpoint {DIRECTORY} is not present")

@pytest.fixture(scope="module")
def captioner():
    return zoo.load(DEFAULT_MODEL)


def test_manifest_records_metrics_baselines_and_recipe():
    manifest = checkpoint.read_manifest(DIRECTORY)
    assert manifest["task"] == "caption"
    assert manifest["recipe"] == ENTRY.recipe
    assert set(manifest["metrics"]) >= {"cider_d", "bleu4"}
    assert set(manifest["baselines"]) == {"most_frequent_caption", "nearest_neighbour_pixels",
                                         "nearest_neighbour_encoder"}
    for values in manifest["baselines"].values():
        assert set(values) == {"cider_d", "bleu4"}
    assert manifest["data"]["split_seed"] == manifest["config"]["split_seed"]
    size = sum(p.stat().st_size for p in DIRECTORY.iterdir())
    assert size < 30 * 2**20


@requires_stamps
def test_captions_training_stamps_sensibly(captioner):
    root = pathlib.Path("/usr/share/tuxpaint/stamps")
    records = [r for r in data.read_tuxpaint(root)
               if data.split_of(r.id, captioner_split_seed()) == "train"]
    records = sorted(records, key=lambda r: data._hash_unit(r.id, "test-sample"))[:24]
    captions = captioner.caption([r.path for r in records])
    assert all(isinstance(c, str) and c for c in captions)
    assert all(w in captioner.vocabulary.words for c in captions for w in c.split())
    # Seen images: far above a constant caption (CIDEr-D about 0.02), and a good
    # share of captions name something in the human caption.
    score, _ = cider_d(captions, [list(r.captions) for r in records])
    stop = {"a", "an", "the", "of", "in", "for", "with", "and", "on", "to", "is", "this"}
    shared = sum(bool((set(c.split()) - stop) & (set(data.caption_words(r.captions[0])) - stop))
                 for c, r in zip(captions, records))
    details = list(zip(captions, [r.captions[0] for r in records]))
    assert score > 0.5, details
    assert shared >= 6, details


def captioner_split_seed():
    return checkpoint.read_manifest(DIRECTORY)["config"]["split_seed"]


@requires_stamps
def test_attention_maps_of_a_real_stamp(captioner):
    path = next(pathlib.Path("/usr/share/tuxpaint/stamps").rglob("*.png"))
    result = captioner.attention_maps(str(path))
    assert result["words"] and result["maps"].shape == (len(result["words"]), 8, 8)
    np.testing.assert_allclose(result["maps"].sum(axis=(1, 2)), 1.0, atol=1e-4)


def test_corrupt_checkpoint_names_the_recipe(tmp_path):
    import shutil

    copy = tmp_path / DEFAULT_MODEL
    shutil.copytree(DIRECTORY, copy)
    (copy / "vocabulary.json").write_text("{}", encoding="utf-8")
    with pytest.raises(zoo.CheckpointError, match="python -m recipes.train_captioner"):
        zoo.load(DEFAULT_MODEL, directory=copy)
