import os

import numpy as np
import pytest

from tests.zoo.captioner.helpers import (
    WORDS,
    coloured_square,
    jpeg_bytes,
    png_bytes,
    svg_text,
)
from zoo.captioner import data


# ----------------------------------------------------------------- text rules
def test_caption_words_and_normalise():
    assert data.caption_words("A US 25 cent piece ($.25).") == \
        ["a", "us", "25", "cent", "piece", "25"]
    assert data.caption_words("Don't PANIC!") == ["dont", "panic"]
    assert data.normalise_caption("  The Letter   G. ") == "the letter g"


@pytest.mark.parametrize("line, expected", [
    ("A red cat. It sleeps all day.", "A red cat."),
    ("A US 25 cent piece ($.25) called a quarter.", "A US 25 cent piece ($.25) called a quarter."),
    ("A toonie ($2.00). (Its name is a play on words.)", "A toonie ($2.00)."),
    ("A singing dinosaur!  Really.", "A singing dinosaur!"),
    ("no end mark", "no end mark"),
])
def test_first_sentence(line, expected):
    assert data.first_sentence(line) == expected


@pytest.mark.parametrize("title, expected", [
    ("Guitar2", "Guitar"),
    ("Clipart by Nicu Buculei - blue_star_01", "Blue star"),
    ("naval_semaphore-flag", "Naval semaphore flag"),
    ("RoundButton", "Round Button"),
    ("Australia - Victoria", "Australia Victoria"),
    ("Map &amp; Star", "Map Star"),
    # Collection or tool names, not the picture:
    ("Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", None),
    ("Lemon SVG theme", None),
    ("Etiquette Icons", None),
    ("Various Cliparts", None),
    # Not English, codes, too short, empty:
    ("Gattina Cat", None),
    ("fc23", None),
    ("a", None),
    ("", None),
    (None, None),
    ("http://example.org/cat", None),
])
def test_clean_title(title, expected):
    assert data.clean_title(title, WORDS) == expected


def test_clean_title_max_words():
    assert data.clean_title("red " * 10, WORDS) is not None
    assert data.clean_title("red " * 11, WORDS) is None


@pytest.mark.parametrize("description, title, expected", [
    ("Acoustic guitar with a red star. Made in 2004.", "Guitar", "Acoustic guitar with a red star."),
    ("guitar", "Guitar", None),  # one word
    ("A guitar", "A guitar", None),  # same as the title
    ("See http://example.org for the red guitar", "Guitar", None),
    ("mail me at someone@example.org", "Guitar", None),
    ("Simbolo delle scatole di collant", "Box", None),  # not English
])
def test_clean_description(description, title, expected):
    assert data.clean_description(description, title, WORDS) == expected


# ------------------------------------------------------------------ readers
def test_read_tuxpaint(stamp_tree):
    records = data.read_tuxpaint(stamp_tree)
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == ["tuxpaint/animals/cats/cat", "tuxpaint/food/apple",
                             "tuxpaint/food/box", "tuxpaint/food/pear"]
    assert by_id["tuxpaint/animals/cats/cat"].captions == ("A red cat.",)
    assert by_id["tuxpaint/food/apple"].captions == ("A green apple ($.25 each).",)
    assert by_id["tuxpaint/food/box"].path.endswith("box.svg")
    assert all(r.source == "tuxpaint" for r in records)


def test_read_tuxpaint_prefers_png(stamp_tree):
    (stamp_tree / "food" / "pear.svg").write_text(svg_text("pear"), encoding="utf-8")
    (record,) = [r for r in data.read_tuxpaint(stamp_tree) if r.id.endswith("pear")]
    assert record.path.endswith("pear.png")


def test_read_tuxpaint_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install .*tuxpaint-stamps-default"):
        data.read_tuxpaint(tmp_path / "nothing")


def test_read_openclipart(tmp_path):
    root = tmp_path / "svg"
    (root / "animals").mkdir(parents=True)
    (root / "animals" / "dog_01.svg").write_text(
        svg_text("Dog", "A red dog with a blue flag."), encoding="utf-8")
    (root / "animals" / "theme.svg").write_text(svg_text("Lemon SVG theme"), encoding="utf-8")
    (root / "animals" / "untitled.svg").write_text(svg_text(""), encoding="utf-8")
    os.symlink(root / "animals" / "dog_01.svg", root / "animals" / "dog_link.svg")
    records = data.read_openclipart(root, WORDS)
    assert [(r.id, r.captions) for r in records] == [
        ("openclipart/animals/dog_01", ("Dog", "A red dog with a blue flag."))]


def test_read_openclipart_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="openclipart-svg"):
        data.read_openclipart(tmp_path / "nothing", WORDS)


def test_read_records_bad_sources():
    with pytest.raises(ValueError, match="Received: sources=\\('flickr',\\)"):
        data.read_records(("flickr",))
    with pytest.raises(ValueError, match="non-empty"):
        data.read_records(())


def test_ensure_data_installs_nothing_by_default(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "TUXPAINT_ROOT", str(tmp_path / "missing"))

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(data.subprocess, "run", no_subprocess)
    for call in (lambda: data.ensure_data(("tuxpaint",)),
                 lambda: data.ensure_data(("tuxpaint",), install=False)):
        with pytest.raises(FileNotFoundError, match="apt-get install -y --no-install-recommends "
                                                    "tuxpaint-stamps-default"):
            call()


def test_captioner_recipe_stops_with_the_command(monkeypatch, tmp_path, capsys):
    from recipes import config as config_lib
    from recipes import train_captioner

    assert train_captioner.DEFAULT.install_data is False
    monkeypatch.setattr(data, "TUXPAINT_ROOT", str(tmp_path / "missing"))
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: pytest.fail("installed"))
    code = config_lib.run_main(train_captioner.main, ["--smoke", f"--workdir={tmp_path}"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: Caption data is not installed; install it (as root) with: apt-get install -y "
        "--no-install-recommends tuxpaint-stamps-default (or let the recipe do it: "
        "--install_data=true)\n")


# -------------------------------------------------------------- cap and split
def _record(i, caption):
    return data.CaptionRecord(f"x/{i}", "tuxpaint", f"/x/{i}.png", (caption,))


def test_cap_per_caption_is_deterministic():
    records = [_record(i, "A card." if i < 6 else f"Thing {i}") for i in range(9)]
    kept = data.cap_per_caption(records, 2, seed=0)
    assert sum(r.captions[0] == "A card." for r in kept) == 2
    assert len(kept) == 5
    assert [r.id for r in data.cap_per_caption(records[::-1], 2)] == [r.id for r in kept][::-1]
    assert data.cap_per_caption(records, 0) == records


def test_split_of_fractions_and_determinism():
    ids = [f"tuxpaint/img{i}" for i in range(4000)]
    splits = [data.split_of(i, seed=3) for i in ids]
    assert splits == [data.split_of(i, seed=3) for i in ids]
    assert abs(splits.count("test") / 4000 - 0.1) < 0.02
    assert abs(splits.count("valid") / 4000 - 0.1) < 0.02
    assert splits != [data.split_of(i, seed=4) for i in ids]


# --------------------------------------------------------------- images
def test_preprocess_composites_on_white_and_pads():
    import tensorflow as tf

    rgba = np.zeros((8, 16, 4), dtype="uint8")
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    image = data.preprocess_image_bytes(tf.constant(png_bytes(rgba)), 16).numpy()
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image[:4], 1.0)  # white padding above
    np.testing.assert_allclose(image[4:12, :8], np.broadcast_to([1.0, 0.0, 0.0], (8, 8, 3)),
                               atol=1e-6)
    np.testing.assert_allclose(image[4:12, 8:], 1.0)  # transparent -> white


def test_decode_image_png_and_jpeg_agree():
    square = coloured_square((0, 0, 255), size=32)
    from_png = data.decode_image(png_bytes(square), 16)
    from_jpeg = data.decode_image(jpeg_bytes(square), 16)
    # JPEG blurs colour edges; compare away from them.
    np.testing.assert_allclose(from_png[6:10, 6:10], from_jpeg[6:10, 6:10], atol=0.05)
    np.testing.assert_allclose(from_png[:2], from_jpeg[:2], atol=0.05)
    np.testing.assert_allclose(from_png[8, 8], [0.0, 0.0, 1.0], atol=1e-6)


def test_decode_image_rejects_garbage():
    with pytest.raises(ValueError, match="Could not decode an image"):
        data.decode_image(b"not an image", 16)


def test_render_svg_is_cached(tmp_path):
    pytest.importorskip("cairosvg")
    path = tmp_path / "box.svg"
    path.write_text(svg_text("box"), encoding="utf-8")
    png = data.render_svg(path, tmp_path / "cache", size=40)
    assert png is not None and png.startswith(b"\x89PNG")
    image = data.decode_image(png, 20)
    np.testing.assert_allclose(image[10, 10], [1.0, 0.0, 0.0], atol=0.02)  # red, padded
    np.testing.assert_allclose(image[0, 0], [1.0, 1.0, 1.0], atol=0.02)
    assert len(list((tmp_path / "cache" / "renders").glob("*.png"))) == 1
    assert data.render_svg(path, tmp_path / "cache", size=40) == png
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg", encoding="utf-8")
    assert data.render_svg(broken, tmp_path / "cache") is None


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_ATTENTION_CACHE", str(tmp_path))
    assert data.cache_dir() == tmp_path / "captions"
    assert data.cache_dir(tmp_path / "mine") == tmp_path / "mine"


def test_load_splits_drops_blank_and_caches(stamp_tree, tmp_path):
    records = [r for r in data.read_tuxpaint(stamp_tree) if not r.path.endswith(".svg")]
    blank = stamp_tree / "blank.png"
    blank.write_bytes(png_bytes(np.full((8, 8, 3), 255, "uint8")))
    records.append(data.CaptionRecord("tuxpaint/blank", "tuxpaint", str(blank), ("Blank.",)))
    splits, stats = data.load_splits(records, 16, tmp_path / "cache", seed=0,
                                     valid_fraction=0.0, test_fraction=0.0, verbose=False)
    assert stats["records"] == 4 and stats["images"] == 3
    assert stats["dropped_unreadable_or_blank"] == 1
    train = splits["train"]
    assert len(train) == 3 and train.images.dtype == np.uint8
    assert train.images.shape == (3, 16, 16, 3)
    assert len(splits["test"]) == 0
    assert train.captions[train.ids.index("tuxpaint/food/pear")] == ["A blue pear!"]
    assert len(list((tmp_path / "cache").glob("images-16-*.npz"))) == 1
    again, _ = data.load_splits(records, 16, tmp_path / "cache", valid_fraction=0.0,
                                test_fraction=0.0, verbose=False)
    np.testing.assert_array_equal(again["train"].images, train.images)
