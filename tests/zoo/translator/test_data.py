import pytest

from zoo.translator import data


def test_split_by_english_sentence_is_deterministic_and_disjoint():
    pairs = [(f"Sentence {i}.", f"Frase {i}.") for i in range(400)]
    pairs += [("Sentence 3.", "Otra frase 3."), ("Sentence 7.", "Otra 7.")]
    splits = data.split_pairs(pairs, seed=0, valid_fraction=0.2, test_fraction=0.2)
    train = {e for e, _ in splits["train"]}
    valid = {e for e, _ in splits["valid"]}
    test = {e for e, _ in splits["test"]}
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train) + len(valid) + len(test) == 400
    assert 40 < len(test) < 120  # about 20%
    again = data.split_pairs(list(reversed(pairs)), seed=0, valid_fraction=0.2,
                             test_fraction=0.2)
    assert {e for e, _ in again["test"]} == test  # independent of file order
    refs = dict(splits["test"])
    for english in ("Sentence 3.", "Sentence 7."):
        if english in refs:
            assert len(refs[english]) == 2  # every translation is a reference


def test_read_pairs_reads_two_columns_and_ignores_blank_lines(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Hi.\tHola.\tattribution\n\nGo.\tVe.\n", encoding="utf-8")
    assert data.read_pairs(str(path)) == [("Hi.", "Hola."), ("Go.", "Ve.")]


@pytest.mark.parametrize(
    "content,match",
    [
        ("Hi.\tHola.\nonly one column\n", r"line 2: expected two tab-separated"),
        ("Hi.\t\n", r"line 1"),
        ("", r"has no sentence pairs"),
    ],
)
def test_read_pairs_errors(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        data.read_pairs(str(path))


def test_read_pairs_rejects_non_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("Hi.\tAdiós.\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        data.read_pairs(str(path))
    with pytest.raises(FileNotFoundError, match="not found"):
        data.read_pairs(str(tmp_path / "missing.tsv"))


def test_tatoeba_split_sizes():
    splits = data.split_pairs(data.read_pairs())
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["train"] > 120_000 and 5_000 < sizes["test"] < 7_000
