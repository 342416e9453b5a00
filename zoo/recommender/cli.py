"""`keras-attention recommend`: next-item recommendations from a zoo recommender.

    keras-attention recommend --history=50,181,172,1 --k=5
    keras-attention recommend --model=recommender_ml100k_bst --history=50,181 \\
        --user_features=age=31,gender=F,occupation=writer
    keras-attention recommend --history=50,181,172 --explain
    keras-attention recommend --export=/tmp/recommender_savedmodel

The history is a comma-separated list of item ids, oldest first. The output is a
table of the top-k unseen items with their scores (and MovieLens titles when the
recbole wheel is installed); `--json` prints the same as JSON.
"""

import argparse
import json

from zoo import inputs
from zoo.cli import print_table

DEFAULT_MODEL = "recommender_ml100k_sasrec"


def split_ids(text, name):
    """The item ids of comma-separated `text`, oldest first (`name` is the
    option or argument, for the error)."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise ValueError(f"`{name}` must be comma-separated item ids, oldest first. "
                         f"Received: {name}={text!r}")
    return ids


def parse_user_features(values):
    """`{field: value}` of `--user_features` values, each `FIELD=VALUE[,FIELD=VALUE...]`
    (the option may be repeated); None when none is given."""
    features = {}
    for text in values:
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    "`--user_features` must look like field=value,field=value (e.g. "
                    f"age=31,gender=F,occupation=writer). Received: --user_features={text}"
                )
            features[key.strip()] = value.strip()
    return features or None


def item_titles(recommender):
    """`{item id: title}` where the model's data has titles (MovieLens), else `{}`."""
    data = recommender.manifest.get("data", {})
    if "MovieLens" not in str(data.get("source", "")):
        return {}
    from zoo.recommender.data import movielens_titles

    return movielens_titles()


def _print_items(header, rows, titles, right):
    """`print_table` of rows about items (an ITEM_ID column), with a TITLE column
    when the data has titles."""
    column = header.index("ITEM_ID")
    if any(row[column] in titles for row in rows):
        header = (*header, "TITLE")
        rows = [(*row, titles.get(row[column], "")) for row in rows]
    print_table(header, rows, right)


def run(args):
    history = split_ids(args.history, "--history") if args.history else None
    user = parse_user_features(args.user_features)
    if args.export is not None:
        inputs.check_output_path(args.export, "--export")
    elif history is None:
        raise ValueError("--history is required (comma-separated item ids, oldest first). "
                         "Received: --history=")
    import zoo

    recommender = zoo.load(args.model, directory=args.checkpoint)
    if args.export is not None:
        from zoo.recommender.export import export_saved_model

        path = export_saved_model(recommender, args.export)
        print(f"SavedModel written to {path}")
        if history is None:
            return 0
    unknown = "ignore" if args.ignore_unknown else "error"
    ids, scores = recommender.recommend(history, k=args.k, user_features=user,
                                        unknown=unknown)
    titles = item_titles(recommender)
    result = {"model": args.model, "recommendations": [
        {"rank": r, "item_id": i, "score": float(s), **({"title": titles[i]} if i in titles else {})}
        for r, (i, s) in enumerate(zip(ids, scores), start=1)
    ]}
    if args.explain:
        explanation = recommender.explain(history, user_features=user, unknown=unknown)
        result["attention"] = [
            {"item_id": i, "weight": float(w), **({"title": titles[i]} if i in titles else {})}
            for i, w in zip(explanation["item_ids"], explanation["attention"])
        ]
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"Top {len(ids)} for a history of {len(history)} items ({args.model}):")
    _print_items(("RANK", "ITEM_ID", "SCORE"),
                 [(str(row["rank"]), row["item_id"], f"{row['score']:.3f}")
                  for row in result["recommendations"]], titles, right=(0, 2))
    if args.explain:
        print("Attention of the next-item prediction over the history (last block):")
        _print_items(("ITEM_ID", "WEIGHT"),
                     [(row["item_id"], f"{row['weight']:.3f}") for row in result["attention"]],
                     titles, right=(1,))
    return 0


def add_parser(subparsers):
    """Registers the `recommend` subcommand."""
    parser = subparsers.add_parser(
        "recommend", help="recommend next items from a history of item ids",
        description="Top-k next items (already-seen items excluded) from a zoo "
                    "sequential recommender.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"zoo name (default {DEFAULT_MODEL})")
    parser.add_argument("--history", default="",
                        help="comma-separated item ids, oldest first")
    parser.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    parser.add_argument("--user_features", action="append", default=[],
                        metavar="FIELD=VALUE[,FIELD=VALUE...]",
                        help="BST models: user features, e.g. age=31,gender=F,occupation=writer")
    parser.add_argument("--user", action="append", dest="user_features",
                        help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--ignore_unknown", action="store_true",
                        help="drop history ids not in the catalogue instead of failing")
    parser.add_argument("--ignore-unknown", action="store_true", dest="ignore_unknown",
                        help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--explain", action="store_true",
                        help="also print the attention over the history")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder (default: the zoo's folder for --model)")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write a TensorFlow SavedModel of the model to DIR")
    parser.set_defaults(func=run)
