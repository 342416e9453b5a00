import numpy as np
import pytest

from tests.zoo.captioner.helpers import coloured_square, png_bytes
from tests.zoo.conftest import needs_checkpoint
from zoo.captioner import familiarity


def test_distance_by_hand_and_threshold_from_validation(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(4000, 2)) * [1.0, 3.0] + [5.0, -1.0]
    valid = np.array([[5.0, -1.0], [6.0, -1.0], [5.0, 5.0]])
    profile = familiarity.fit_familiarity(train, valid, quantile=0.5, ridge=0.0)
    # About (x - 5) / 1 and (y + 1) / 3 in standard units.
    np.testing.assert_allclose(familiarity.distances(profile, valid), [0.0, 1.0, 2.0],
                               atol=0.06)
    assert profile["valid_max"] == pytest.approx(2.0, abs=0.06)
    assert profile["threshold"] == pytest.approx(1.0, abs=0.06)  # the median
    familiarity.save_profile(profile, tmp_path / familiarity.FILE_NAME)
    loaded = familiarity.load_profile(tmp_path / familiarity.FILE_NAME)
    for key in profile:
        np.testing.assert_array_equal(loaded[key], profile[key])


def test_ridge_keeps_few_images_usable():
    train = np.eye(3, 8)  # 3 images, 8 features: a singular covariance
    profile = familiarity.fit_familiarity(train, train[:1])
    assert np.all(np.isfinite(familiarity.distances(profile, np.ones((2, 8)))))


@pytest.mark.parametrize("train, valid", [
    (np.zeros((1, 3)), np.zeros((1, 3))), (np.zeros((5, 3)), np.zeros((0, 3))),
    (np.zeros((5, 3)), np.zeros((2, 4))), (np.zeros(5), np.zeros((2, 1)))])
def test_bad_shapes(train, valid):
    with pytest.raises(ValueError, match="Received: shapes"):
        familiarity.fit_familiarity(train, valid)


@needs_checkpoint("captioner_tuxpaint_openclipart")
def test_shipped_captioner_reports_distance_and_flags_noise(tmp_path, capsys, cached_load):
    import zoo
    from zoo import cli

    captioner = zoo.load("captioner_tuxpaint_openclipart")
    profile = captioner.familiarity_profile
    manifest = captioner_manifest()
    assert float(profile["threshold"]) == pytest.approx(manifest["familiarity"]["threshold"],
                                                        abs=1e-3)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    square = coloured_square((200, 20, 20), size=24)
    distances, familiar = captioner.familiarity([noise, square])
    assert distances.shape == (2,) and distances[0] > float(profile["threshold"])
    assert familiar.tolist() == [False, bool(distances[1] <= float(profile["threshold"]))]

    paths = [tmp_path / "noise.png", tmp_path / "square.png"]
    paths[0].write_bytes(png_bytes(noise))
    paths[1].write_bytes(png_bytes(square))
    assert cli.main(["caption", *map(str, paths), "--beam_size=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    threshold = f"{float(profile['threshold']):.1f}"
    assert lines[0].split("\t")[2] == (
        f"unfamiliar image: distance {distances[0]:.1f} from the training images (familiar "
        f"up to {threshold}); the caption is a guess")
    assert lines[1].split("\t")[2].startswith(f"{'distance' if familiar[1] else 'unfamiliar'}")


def captioner_manifest():
    import json

    import zoo

    path = zoo.checkpoints_root() / "captioner_tuxpaint_openclipart" / "manifest.json"
    return json.loads(path.read_text())


def test_without_a_profile_familiarity_is_an_error():
    from tests.zoo.captioner.helpers import tiny_captioner

    captioner = tiny_captioner()
    assert captioner.familiarity_profile is None
    with pytest.raises(ValueError, match="no familiarity profile"):
        captioner.familiarity(coloured_square((1, 2, 3)))
