import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import zoo
from tests.zoo.conftest import needs_checkpoint
from zoo import checkpoint
from zoo import cli
from zoo.checkpoint import CheckpointError


def _raise(args):
    errors = {
        "checkpoint": CheckpointError("Checkpoint /x: does not exist.\nRe-create it with: cmd"),
        "value": ValueError("bad value. Received: k=1"),
        "file": FileNotFoundError(2, "No such file or directory", "/nowhere"),
        "exit": SystemExit("stopped by the command"),
    }
    if args.kind == "ok":
        print(f"ran with {args.kind}")
        return None
    if args.kind == "three":
        return 3
    raise errors[args.kind]


def add_parser(subparsers):
    """Command hook used by the tests, as a zoo model module would define it."""
    parser = subparsers.add_parser("fake", help="a test command")
    parser.add_argument("kind")
    parser.set_defaults(func=_raise)


@pytest.fixture
def zoo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_command(monkeypatch):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", [__name__])


def test_list(zoo_dir, capsys):
    checkpoint.write_checkpoint(
        zoo_dir / "translator_en_es",
        {"w.bin": b"x"},
        {"metrics": {"bleu": 21.456789, "chrf": 40.0}, "main_metric": "bleu"},
    )
    (zoo_dir / "translator_en_es_bahdanau").mkdir()  # present but no manifest
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "PRESENT", "METRIC", "RECIPE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["translator_en_es"].split() == [
        "translator_en_es",
        "translate",
        "yes",
        "bleu=21.46",
        "python",
        "-m",
        "recipes.train_translator",
    ]
    assert re.search(r" yes +\(no readable manifest\) ", rows["translator_en_es_bahdanau"])
    assert rows["translator_en_es_bahdanau"].endswith("python -m recipes.train_translator")
    assert lines[-1] == f"checkpoints folder: {zoo_dir}"
    # Columns line up.
    translators = [rows["translator_en_es"], rows["translator_en_es_bahdanau"]]
    assert len({lines[0].index("TASK")} | {row.index("translate") for row in translators}) == 1


def test_list_metric_choice(zoo_dir, capsys):
    checkpoint.write_checkpoint(
        zoo_dir / "translator_en_es", {}, {"metrics": {"loss": 1.5, "bleu": 3}}
    )
    assert cli.main(["list"]) == 0
    row = _row(capsys.readouterr().out, "translator_en_es")
    assert row.split()[:4] == ["translator_en_es", "translate", "yes", "bleu=3"]


def test_list_absent(zoo_dir, capsys):
    assert cli.main(["list"]) == 0
    row = _row(capsys.readouterr().out, "translator_en_es")
    assert row.split()[:4] == ["translator_en_es", "translate", "no", "-"]


def _row(out, name):
    """The `list` output line of model `name`."""
    return next(line for line in out.splitlines() if line.split()[:1] == [name])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "error: argument COMMAND: invalid choice: 'nope'"),
        ([], "error: the following arguments are required: COMMAND"),
        (["list", "--bad"], "error: unrecognized arguments: --bad"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_help_and_version(capsys):
    assert cli.main(["--help"]) == 0
    assert "list" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("keras-attention ")


@pytest.mark.parametrize(
    "kind, line",
    [
        ("checkpoint", "error: Checkpoint /x: does not exist. Re-create it with: cmd\n"),
        ("value", "error: bad value. Received: k=1\n"),
        ("file", "error: [Errno 2] No such file or directory: '/nowhere'\n"),
        ("exit", "error: stopped by the command\n"),
    ],
)
def test_command_errors(fake_command, kind, line, capsys):
    assert cli.main(["fake", kind]) == 2
    _, err = capsys.readouterr()
    assert err == line


def test_command_module_hook(fake_command, capsys):
    assert cli.main(["fake", "ok"]) == 0
    assert capsys.readouterr().out == "ran with ok\n"
    assert cli.main(["fake", "three"]) == 3


def test_broken_command_module(monkeypatch, zoo_dir, capsys):
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ["tests.zoo.no_such_module", __name__])
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("NAME")
    assert err.startswith("warning: commands of tests.zoo.no_such_module are unavailable: ")
    assert err.count("\n") == 1
    assert cli.main(["fake", "ok"]) == 0


def test_other_errors_are_not_hidden(fake_command, monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(sys.modules[__name__], "_raise", broken)
    with pytest.raises(KeyError):
        cli.main(["fake", "ok"])


def _script():
    script = pathlib.Path(sys.executable).parent / "keras-attention"
    if script.exists():
        return str(script)
    found = shutil.which("keras-attention")
    if found is None:
        pytest.fail("keras-attention is not installed; run `pip install -e . --no-deps`")
    return found


def test_console_script(tmp_path):
    env = dict(os.environ, KERAS_ATTENTION_ZOO_DIR=str(tmp_path))
    result = subprocess.run(
        [_script(), "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == "NAME"
    assert "translator_en_es" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: argument COMMAND: invalid choice: 'nope'")
    assert result.stderr.count("\n") == 1


@pytest.fixture
def bad_files(tmp_path):
    """The folder of the sweep's input files: good and broken images and CSVs."""
    from PIL import Image

    from tests.zoo.forecaster.conftest import series_csv

    square = tmp_path / "square.png"
    Image.new("RGB", (16, 16), "green").save(square)
    noise = tmp_path / "noise.png"
    Image.effect_noise((64, 64), 50).save(noise)
    (tmp_path / "truncated.png").write_bytes(noise.read_bytes()[:-200])
    Image.new("RGB", (16, 16), "red").save(tmp_path / "picture.gif")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(square.read_bytes())
    (tmp_path / "empty.csv").write_bytes(b"")
    series_csv(tmp_path / "history.csv", 400, ("y",))
    return tmp_path


def _case(argv, message, model=None):
    """A sweep case; `model` is the shipped checkpoint the command must load."""
    return pytest.param(argv, message, marks=[needs_checkpoint(model)] if model else [],
                        id=" ".join(argv).replace("{tmp}/", ""))


TRANSLATOR, CAPTIONER = "translator_en_es", "captioner_tuxpaint_openclipart"
RECOMMENDER, FORECASTER = "recommender_ml100k_sasrec", "forecaster_electricity"
OUT = "--out={tmp}/m.png"
BAD_INPUTS = [
    _case(["translate", ""],
          "`sentences[0]` must not be empty or whitespace only. Received: sentences[0]=''",
          TRANSLATOR),
    _case(["translate", "Hello.", "   "],
          "`sentences[1]` must not be empty or whitespace only. Received: sentences[1]='   '",
          TRANSLATOR),
    _case(["translate", "\U0001F600"], "`sentences[0]` has no word or subword the translator "
          "knows. Received: sentences[0]='\U0001F600'", TRANSLATOR),
    _case(["translate", "--beam_size=0", "Hello."], "argument --beam_size: must be a positive "
          "integer. Received: '0' (see 'keras-attention translate --help')"),
    _case(["translate", "--export= "],
          "`--export` must not be empty or whitespace only. Received: --export=' '"),
    _case(["translate", "--export={tmp}/nowhere/saved"], "The folder of `--export` does not "
          "exist: {tmp}/nowhere. Received: --export='{tmp}/nowhere/saved'"),
    _case(["caption", ""],
          "`images[0]` must not be empty or whitespace only. Received: images[0]=''", CAPTIONER),
    _case(["caption", "{tmp}/text.png"], "`images[0]` must be a PNG or JPEG image but it is not "
          "an image file. Received: images[0]='{tmp}/text.png'", CAPTIONER),
    _case(["caption", "{tmp}/square.png", "{tmp}/empty.png"], "`images[1]` must be a PNG or "
          "JPEG image but it is empty. Received: images[1]='{tmp}/empty.png'", CAPTIONER),
    _case(["caption", "{tmp}/truncated.png"],
          "`images[0]` must be a PNG or JPEG image but its image data is truncated or corrupt",
          CAPTIONER),
    _case(["caption", "{tmp}/picture.gif"], "`images[0]` must be a PNG or JPEG image but it is "
          "a GIF image. Received: images[0]='{tmp}/picture.gif'", CAPTIONER),
    _case(["caption", "{tmp}/missing.png"], "`images[0]` must be an existing image file; there "
          "is none. Received: images[0]='{tmp}/missing.png'", CAPTIONER),
    _case(["caption", "--beam_size=x", "{tmp}/square.png"], "argument --beam_size: must be a "
          "positive integer. Received: 'x' (see 'keras-attention caption --help')"),
    _case(["caption", "{tmp}/square.png", "--explain={tmp}/nowhere/m.png"],
          "The folder of `--explain` does not exist"),
    _case(["recommend", "--history= , "], "`--history` must be comma-separated item ids, "
          "oldest first. Received: --history=' , '"),
    _case(["recommend", "--history=50", "--user_features=age=31"], "This model takes no user "
          "features; pass user_features=None. Received: user_features={'age': '31'}",
          RECOMMENDER),
    _case(["recommend", "--history=50", "--k=0"],
          "`k` must be a positive integer. Received: k=0", RECOMMENDER),
    _case(["recommend", "--export="],
          "`--export` must not be empty or whitespace only. Received: --export=''"),
    _case(["recommend", "--history=50", "--bogus"],
          "unrecognized arguments: --bogus (see 'keras-attention recommend --help')"),
    _case(["forecast"], "--input and --output are required to forecast (or --export DIR to "
          "export). Received: --input=None, --output=None"),
    _case(["forecast", "--input= ", "--output={tmp}/o.csv"],
          "`--input` must not be empty or whitespace only. Received: --input=' '"),
    _case(["forecast", "--input={tmp}/missing.csv", "--output={tmp}/o.csv"], "`--input` must "
          "be an existing CSV file; there is none. Received: --input='{tmp}/missing.csv'"),
    _case(["forecast", "--input={tmp}/binary.csv", "--output={tmp}/o.csv"], "`--input` must be "
          "a UTF-8 CSV file; byte 0 is not UTF-8. Received: --input='{tmp}/binary.csv'",
          FORECASTER),
    _case(["forecast", "--input={tmp}/empty.csv", "--output={tmp}/o.csv"], "`--input` must be "
          "a CSV file with a header row; it is empty. Received: --input='{tmp}/empty.csv'",
          FORECASTER),
    _case(["forecast", "--input={tmp}/history.csv", "--output={tmp}/o.csv", "--time_column= "],
          "`--time_column` must not be empty or whitespace only. Received: --time_column=' '",
          FORECASTER),
    _case(["forecast", "--input={tmp}/history.csv", "--output={tmp}/o.csv", "--target="],
          "`--target` must not be empty or whitespace only. Received: --target=''", FORECASTER),
    _case(["forecast", "--input={tmp}/history.csv", "--output={tmp}/nowhere/o.csv"],
          "The folder of `--output` does not exist"),
    _case(["forecast", "--horizon=x"],
          "argument --horizon: invalid int value: 'x' (see 'keras-attention forecast --help')"),
    _case(["explain", TRANSLATOR, " ", OUT],
          "`INPUT` must not be empty or whitespace only. Received: INPUT=' '"),
    _case(["explain", TRANSLATOR, "\U0001F600", OUT], "`sentence` has no word or subword the "
          "translator knows. Received: sentence='\U0001F600'", TRANSLATOR),
    _case(["explain", CAPTIONER, "{tmp}/text.png", OUT], "`image` must be a PNG or JPEG image "
          "but it is not an image file. Received: image='{tmp}/text.png'", CAPTIONER),
    _case(["explain", CAPTIONER, "{tmp}/missing.png", OUT], "`INPUT` must be an existing image "
          "file; there is none. Received: INPUT='{tmp}/missing.png'"),
    _case(["explain", RECOMMENDER, ",", OUT], "`INPUT` must be comma-separated item ids, "
          "oldest first. Received: INPUT=','", RECOMMENDER),
    _case(["explain", RECOMMENDER, "50", "--user_features=age=31", OUT],
          "This model takes no user features", RECOMMENDER),
    _case(["explain", FORECASTER, "{tmp}/binary.csv", OUT], "`INPUT` must be a UTF-8 CSV file; "
          "byte 0 is not UTF-8. Received: INPUT='{tmp}/binary.csv'", FORECASTER),
    _case(["explain", FORECASTER, "{tmp}/missing.csv", OUT], "`INPUT` must be an existing CSV "
          "file; there is none. Received: INPUT='{tmp}/missing.csv'"),
    _case(["explain", "no_such_model", "x", OUT], "Unknown zoo model"),
    _case(["explain", TRANSLATOR, "Hello", "--out={tmp}/m.jpg"],
          "`--out` must be a .png file. Received: --out='{tmp}/m.jpg'"),
    _case(["explain", TRANSLATOR, "Hello", "--out={tmp}/nowhere/m.png"],
          "The folder of `--out` does not exist: {tmp}/nowhere."),
    _case(["explain", TRANSLATOR, "Hello"], "the following arguments are required: --out "
          "(see 'keras-attention explain --help')"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS)
def test_bad_input_is_one_line_error(argv, message, bad_files, cached_load, capsys):
    argv = [arg.replace("{tmp}", str(bad_files)) for arg in argv]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.replace("{tmp}", str(bad_files)) in err


def test_corrupt_image_prints_no_tensorflow_text(bad_files):
    """TensorFlow's own output at start-up aside (printed before the marker), a corrupt
    image gives one line on stderr: no log of a failed TensorFlow graph node."""
    if not (zoo.checkpoints_root() / CAPTIONER).is_dir():
        pytest.skip(f"checkpoint {CAPTIONER} is not present")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import sys, tensorflow as tf; tf.constant(1.0) + 1.0; "
            "print('MARK', file=sys.stderr, flush=True); "
            "from zoo import cli; sys.exit(cli.main(sys.argv[1:]))")
    result = subprocess.run(
        [sys.executable, "-c", code, "caption", str(bad_files / "text.png")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    after = result.stderr.split("MARK\n", 1)[1]
    assert after == ("error: `images[0]` must be a PNG or JPEG image but it is not an image "
                     f"file. Received: images[0]='{bad_files / 'text.png'}'\n")


README_VERBS = ("translate", "caption", "recommend", "forecast")


def test_readme_export_claim_holds():
    """README names the verbs that take --export DIR; each accepts it alone."""
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    claim = next(p for p in readme.split("\n\n") if "--export DIR" in p)
    named = set(re.findall(r"`(?:keras-attention )?(\w+)(?: --export DIR)?`", claim))
    assert set(README_VERBS) <= named, claim
    parser = cli.build_parser()
    for verb in README_VERBS:
        assert parser.parse_args([verb, "--export", "/tmp/x"]).export == "/tmp/x"


def _shown_options(parser):
    return {option for action in parser._actions if action.help != argparse.SUPPRESS
            for option in action.option_strings}


def test_one_flag_style():
    """Every verb's options are snake_case long flags; old spellings parse the same but
    are not in the help."""
    verbs = cli.build_parser().verbs
    for name, parser in verbs.items():
        for option in _shown_options(parser) - {"-h", "--help"}:
            assert re.fullmatch(r"--[a-z0-9]+(_[a-z0-9]+)*", option), (name, option)
    assert "--beam_size" in _shown_options(verbs["translate"]) & _shown_options(verbs["caption"])
    assert "--user_features" in (_shown_options(verbs["recommend"])
                                 & _shown_options(verbs["explain"]))
    assert "--time_column" in _shown_options(verbs["forecast"]) & _shown_options(verbs["explain"])


@pytest.mark.parametrize("verb, new, old", [
    (["caption", "x.png"], ["--beam_size=2"], ["--beam-width=2"]),
    (["recommend"], ["--ignore_unknown"], ["--ignore-unknown"]),
    (["recommend"], ["--user_features=age=3,gender=F"], ["--user=age=3,gender=F"]),
    (["explain", "m", "i", "--out=m.png"], ["--user_features=age=3", "--user_features=g=F"],
     ["--user_feature=age=3", "--user_feature=g=F"]),
])
def test_old_flag_spellings_still_parse(verb, new, old):
    parser = cli.build_parser()
    assert parser.parse_args(verb + old) == parser.parse_args(verb + new)
    help_words = re.findall(r"--[\w-]+", parser.verbs[verb[0]].format_help())
    assert old[0].split("=")[0] not in help_words


def test_top_level_help_says_what_each_model_was_trained_on(capsys):
    from zoo import cli as zoo_cli
    from zoo import registry

    assert zoo_cli.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for entry in registry.entries():
        assert entry.name in text and " ".join(entry.description.split()) in text
        assert "trained on" in entry.description
