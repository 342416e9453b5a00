import pytest

from tests.zoo.captioner.helpers import coloured_square, png_bytes, tiny_captioner
from zoo import cli
from zoo.captioner import cli as captioner_cli


@pytest.fixture
def fake_zoo(monkeypatch):
    """`zoo.load` returns a tiny random captioner, so the command runs without a checkpoint."""
    import zoo

    captioner = tiny_captioner()
    calls = []

    def load(name, directory=None):
        calls.append((name, directory))
        return captioner

    monkeypatch.setattr(zoo, "load", load)
    return captioner, calls


def test_caption_command_prints_captions_and_draws(tmp_path, fake_zoo, capsys):
    captioner, calls = fake_zoo
    image = tmp_path / "square.png"
    image.write_bytes(png_bytes(coloured_square((10, 200, 10), size=20)))
    out = tmp_path / "explain.png"
    code = cli.main(["caption", str(image), "--explain", str(out), "--beam_size", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    expected = captioner.caption(str(image), beam_width=1)[0]
    assert f"{image}\t{expected}" in printed
    assert out.read_bytes().startswith(b"\x89PNG")
    assert calls == [(captioner_cli.DEFAULT_MODEL, None)]


@pytest.mark.large
def test_caption_command_export(tmp_path, fake_zoo):
    code = cli.main(["caption", "--export", str(tmp_path / "saved"), "--model",
                     captioner_cli.DEFAULT_MODEL])
    assert code == 0
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


def test_caption_command_errors(tmp_path, fake_zoo, capsys):
    assert cli.main(["caption"]) == 2
    assert "error: Give at least one IMAGE" in capsys.readouterr().err
    assert cli.main(["caption", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_caption_command_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["caption", "x.png", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "Re-create it with: python -m recipes.train_captioner" in capsys.readouterr().err
