"""Fixtures of the captioner tests."""

import pytest

from tests.zoo.captioner.helpers import coloured_square, png_bytes, svg_text


@pytest.fixture
def stamp_tree(tmp_path):
    """A fake Tux Paint stamps folder with four usable stamps and two unusable ones."""
    root = tmp_path / "stamps"
    (root / "animals" / "cats").mkdir(parents=True)
    (root / "food").mkdir(parents=True)
    (root / "animals" / "cats" / "cat.png").write_bytes(png_bytes(coloured_square((200, 0, 0))))
    (root / "animals" / "cats" / "cat.txt").write_text(
        "A red cat. It sleeps all day.\nfr.utf8=Un chat rouge.\n", encoding="utf-8")
    (root / "food" / "apple.png").write_bytes(png_bytes(coloured_square((0, 200, 0))))
    (root / "food" / "apple.txt").write_text("A green apple ($.25 each).\n", encoding="utf-8")
    (root / "food" / "pear.png").write_bytes(png_bytes(coloured_square((0, 0, 200))))
    (root / "food" / "pear.txt").write_text("A blue pear!\n", encoding="utf-8")
    (root / "food" / "box.svg").write_text(svg_text("box"), encoding="utf-8")
    (root / "food" / "box.txt").write_text("A red box.\n", encoding="utf-8")
    # Unusable: no image, and an empty caption.
    (root / "food" / "ghost.txt").write_text("A ghost.\n", encoding="utf-8")
    (root / "food" / "empty.png").write_bytes(png_bytes(coloured_square((9, 9, 9))))
    (root / "food" / "empty.txt").write_text("\n", encoding="utf-8")
    return root
