import json

import pytest

from tests.zoo.recommender.helpers import write_tiny_checkpoint
from zoo import cli


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch, sasrec, bst):
    monkeypatch.setenv("KERAS_ATTENTION_ZOO_DIR", str(tmp_path))
    write_tiny_checkpoint(tmp_path / "recommender_ml100k_sasrec", sasrec)
    write_tiny_checkpoint(tmp_path / "recommender_ml100k_bst", bst,
                          name="recommender_ml100k_bst")
    return {"sasrec": sasrec, "bst": bst}


def test_recommend_json(tiny_zoo, capsys):
    code = cli.main(["recommend", "--history=i3,i7,i1", "--k=4", "--json", "--explain"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    ids = [r["item_id"] for r in result["recommendations"]]
    assert ids == tiny_zoo["sasrec"].recommend(["i3", "i7", "i1"], k=4)[0]
    assert [r["rank"] for r in result["recommendations"]] == [1, 2, 3, 4]
    assert [a["item_id"] for a in result["attention"]] == ["i3", "i7", "i1"]
    assert sum(a["weight"] for a in result["attention"]) == pytest.approx(1.0, rel=1e-4)


def test_recommend_text_and_user_features(tiny_zoo, capsys):
    code = cli.main(["recommend", "--model=recommender_ml100k_bst", "--history=i1,i2",
                     "--k=2", "--user_features=age=31,gender=F", "--explain"])
    out, _ = capsys.readouterr()
    assert code == 0
    want = tiny_zoo["bst"].recommend(["i1", "i2"], k=2, user_features={"age": "31", "gender": "F"})
    lines = out.splitlines()
    assert lines[0].startswith("Top 2 for a history of 2 items")
    assert lines[1].split() == ["RANK", "ITEM_ID", "SCORE"]
    assert lines[2].split()[:2] == ["1", want[0][0]]
    assert lines[4].startswith("Attention")
    assert lines[5].split() == ["ITEM_ID", "WEIGHT"]


def test_recommend_text_shows_titles(tiny_zoo, capsys, monkeypatch):
    from zoo.recommender import cli as recommender_cli

    titles = {f"i{n}": f"Film {n} (1995)" for n in range(1, 31)}
    monkeypatch.setattr(recommender_cli, "item_titles", lambda recommender: titles)
    assert cli.main(["recommend", "--history=i1,i2", "--k=3", "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["RANK", "ITEM_ID", "SCORE", "TITLE"]
    assert lines[6].split() == ["ITEM_ID", "WEIGHT", "TITLE"]
    for header, rows, id_column in ((lines[1], lines[2:5], 1), (lines[6], lines[7:], 0)):
        assert len(rows) == (3 if id_column else 2)
        for row in rows:
            assert row[header.index("TITLE"):] == titles[row.split()[id_column]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--history=i1,zzz"], "not in the catalogue"),
        (["--history="], "--history is required"),
        (["--history=i1", "--k=0"], "k=0"),
        (["--history=i1", "--user_features=age=3"], "takes no user features"),
        (["--model=recommender_ml100k_bst", "--history=i1", "--user_features=age"],
         "field=value"),
        (["--model=nope", "--history=i1"], "Unknown zoo model"),
        (["--model=recommender_retail_sasrec", "--history=i1"], "does not exist"),
    ],
)
def test_recommend_errors(tiny_zoo, capsys, argv, message):
    assert cli.main(["recommend", *argv]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and message in err


def test_ignore_unknown(tiny_zoo, capsys):
    assert cli.main(["recommend", "--history=i1,zzz", "--ignore_unknown", "--json"]) == 0
    assert len(json.loads(capsys.readouterr()[0])["recommendations"]) == 10


def test_export(tiny_zoo, tmp_path, capsys):
    target = tmp_path / "exported"
    assert cli.main(["recommend", f"--export={target}"]) == 0
    assert (target / "saved_model.pb").is_file()
    assert "SavedModel written" in capsys.readouterr()[0]
