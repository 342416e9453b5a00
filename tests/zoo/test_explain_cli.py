"""`keras-attention explain` on the shipped checkpoints and a tiny forecaster."""

import pathlib
import re

import pytest

import zoo
from tests.zoo.forecaster.conftest import series_csv, write_tiny_checkpoint
from zoo import cli

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

STAMPS = pathlib.Path("/usr/share/tuxpaint/stamps")
_LOADED = {}


def _needs(name):
    return pytest.mark.skipif(
        not (zoo.checkpoints_root() / name).is_dir(),
        reason=f"checkpoint {name} is not present",
    )


@pytest.fixture
def cached_load(monkeypatch):
    """`zoo.load` with each model loaded once for the whole module."""
    real = zoo.load

    def load(name, directory=None):
        key = (name, str(directory))
        if key not in _LOADED:
            _LOADED[key] = real(name, directory=directory)
        return _LOADED[key]

    monkeypatch.setattr(zoo, "load", load)


def _png_size(path):
    with PIL.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@_needs("translator_en_es")
@pytest.mark.parametrize("heads, size", [(False, (900, 300)), (True, (1200, 300))])
def test_explain_translator(tmp_path, capsys, cached_load, heads, size):
    out = tmp_path / "m.png"
    argv = ["explain", "translator_en_es", "Where is the library?", "--out", str(out)]
    assert cli.main(argv + (["--heads"] if heads else [])) == 0
    printed = capsys.readouterr().out
    assert f"written to {out}" in printed
    assert "biblioteca" in printed
    # 3 decoder layers (heads averaged) or the 4 heads of the last one, 300 px each.
    assert _png_size(out) == size


@_needs("recommender_ml100k_sasrec")
def test_explain_recommender(tmp_path, capsys, cached_load):
    out = tmp_path / "r.png"
    assert cli.main(["explain", "recommender_ml100k_sasrec", "50, 181,172", "--out",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 history item(s) in 2 block(s)" in printed
    assert _png_size(out) == (600, 300)  # one panel per block


@_needs("captioner_tuxpaint_openclipart")
def test_explain_captioner(tmp_path, capsys, cached_load):
    if not STAMPS.is_dir():
        pytest.skip("Tux Paint stamps are not installed (apt-get install tuxpaint-stamps)")
    image = next(iter(sorted(STAMPS.rglob("*.png"))), None)
    if image is None:
        pytest.skip("no PNG stamp found")
    out = tmp_path / "c.png"
    assert cli.main(["explain", "captioner_tuxpaint_openclipart", str(image), "--out",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    words = int(re.search(r"attention of (\d+) word", printed).group(1))
    # The captioner's overlay: the image and one panel per word, 5 per row, 200 px.
    panels = 1 + words
    columns = min(panels, 5)
    rows = -(-panels // columns)
    assert _png_size(out) == (columns * 200, rows * 200 + 40)


def test_explain_forecaster(tmp_path, capsys):
    directory = write_tiny_checkpoint(tmp_path / "forecaster_electricity")
    csv_path = series_csv(tmp_path / "history.csv", 60)
    out = tmp_path / "f.png"
    assert cli.main(["explain", "forecaster_electricity", str(csv_path), "--checkpoint",
                     str(directory), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "over 7 past patch(es) of 2 channel(s)" in printed
    assert _png_size(out) == (300, 300)  # one panel: block rows and rollout per channel


@pytest.mark.parametrize("argv, message", [
    (["explain", "no_such_model", "x", "--out", "m.png"], "Unknown zoo model"),
    (["explain", "translator_en_es", "Hello", "--out", "m.jpg"], "--out must be a .png"),
    (["explain", "translator_en_es", "  ", "--out", "m.png"], "INPUT must not be empty"),
    (["explain", "captioner_tuxpaint_openclipart", "missing.png", "--out", "m.png"],
     "Image file not found: missing.png"),
    (["explain", "forecaster_electricity", "missing.csv", "--out", "m.png"],
     "CSV file not found: missing.csv"),
    (["explain", "translator_en_es", "Hello"], "--out"),
])
def test_explain_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_explain_missing_out_folder(tmp_path, capsys):
    out = tmp_path / "nowhere" / "m.png"
    assert cli.main(["explain", "translator_en_es", "Hello", "--out", str(out)]) == 2
    assert "folder of --out does not exist" in capsys.readouterr().err


@_needs("recommender_ml100k_sasrec")
def test_explain_recommender_unknown_item(tmp_path, capsys, cached_load):
    out = tmp_path / "r.png"
    assert cli.main(["explain", "recommender_ml100k_sasrec", "50,not_an_item", "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert "not in the catalogue" in err and "not_an_item" in err
    assert not out.exists()


def test_explain_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["explain", "translator_en_es", "Hello", "--checkpoint",
                     str(tmp_path / "none"), "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m recipes.train_translator" in err
