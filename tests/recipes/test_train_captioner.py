import json

import numpy as np
import pytest

import zoo
from recipes import train_captioner
from tests.zoo.captioner.helpers import requires_stamps
from zoo import checkpoint


@requires_stamps
def test_smoke_run_writes_evaluation_and_loadable_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    payload = train_captioner.main(["--smoke", f"--workdir={workdir}",
                                    f"--cache_dir={tmp_path / 'cache'}"])
    systems = [row["system"] for row in payload["rows"]]
    assert systems[0] == "captioner, beam 2"
    assert any(s.startswith("most frequent caption") for s in systems)
    assert {"nearest neighbour, 16x16 pixels", "nearest neighbour, encoder features"} <= \
        set(systems)
    stored = json.loads((workdir / "evaluation.json").read_text())
    assert stored["metrics"]["cider_d"] == payload["metrics"]["cider_d"]
    assert stored["data"]["train_images"] > 0 and stored["data"]["test_images"] > 0

    directory = workdir / "checkpoints" / "captioner_tuxpaint_openclipart"
    manifest = checkpoint.verify_checkpoint(directory, train_captioner.RECIPE)
    assert manifest["recipe"] == (f"python -m recipes.train_captioner --smoke "
                                  f"--workdir={workdir} --cache_dir={tmp_path / 'cache'}")
    scst = manifest["self_critical"]
    assert scst["epoch"] == 1 and [h["epoch"] for h in scst["history"]] == [0, 1]
    assert scst["best"] == max(h["valid_cider_d"] for h in scst["history"])
    assert stored["self_critical"]["history"] == scst["history"]
    assert manifest["task"] == "caption" and manifest["main_metric"] == "cider_d"
    assert set(manifest["baselines"]) == {"most_frequent_caption", "nearest_neighbour_pixels",
                                         "nearest_neighbour_encoder"}
    assert "GPL" in manifest["data"]["licence"]
    captioner = zoo.load("captioner_tuxpaint_openclipart", directory=directory)
    (caption,) = captioner.caption(np.full((10, 10, 3), 200, "uint8"))
    assert isinstance(caption, str)

    # --evaluate_only re-evaluates that checkpoint without training: the same weights,
    # the metrics of the same decoding, the training provenance kept.
    weights = (directory / "model.weights.h5").read_bytes()
    again = train_captioner.main(["--smoke", f"--workdir={tmp_path / 'eval'}",
                                  f"--cache_dir={tmp_path / 'cache'}",
                                  f"--checkpoint_dir={directory.parent}",
                                  "--evaluate_only=true"])
    assert again["rows"] == payload["rows"]
    rewritten = checkpoint.verify_checkpoint(directory, train_captioner.RECIPE)
    assert (directory / "model.weights.h5").read_bytes() == weights
    assert rewritten["metrics"] == manifest["metrics"]
    assert rewritten["recipe"] == manifest["recipe"]
    assert rewritten["self_critical"] == manifest["self_critical"]
    assert rewritten["evaluation"]["command"].endswith("--evaluate_only=true")


def test_evaluate_only_needs_a_checkpoint(tmp_path):
    with pytest.raises(zoo.CheckpointError, match="python -m recipes.train_captioner"):
        train_captioner.main([f"--checkpoint_dir={tmp_path / 'none'}", "--evaluate_only=true",
                              "--install_data=false"])


def test_help_prints_keys(capsys):
    assert train_captioner.main(["--help"]) is None
    assert "--max_per_caption=3" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--sources=flickr"], "--sources must be a comma-separated subset"),
    (["--nope=1"], "Unknown config key `nope`"),
    (["--patch_size=6"], "patch_size=6"),
])
def test_bad_arguments(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        train_captioner.main([*argv, f"--workdir={tmp_path}", "--install_data=false"])
