"""`keras-attention recommend`: next-item recommendations from a zoo recommender.

    keras-attention recommend --history=50,181,172,1 --k=5
    keras-attention recommend --model=recommender_ml100k_bst --history=50,181 \\
        --user=age=31,gender=F,occupation=writer
    keras-attention recommend --history=50,181,172 --explain
    keras-attention recommend --export=/tmp/recommender_savedmodel

The history is a comma-separated list of item ids, oldest first. The output lists
the top-k unseen items with their scores (and MovieLens titles when the recbole
wheel is installed); `--json` prints the same as JSON.
"""

import json

DEFAULT_MODEL = "recommender_ml100k_sasrec"


def _split_ids(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_user(text):
    if not text:
        return None
    features = {}
    for part in _split_ids(text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                "--user must look like field=value,field=value (e.g. "
                f"age=31,gender=F,occupation=writer). Received: --user={text}"
            )
        features[key.strip()] = value.strip()
    return features


def _titles(recommender):
    data = recommender.manifest.get("data", {})
    if "MovieLens" not in str(data.get("source", "")):
        return {}
    from zoo.recommender.data import movielens_titles

    return movielens_titles()


def run(args):
    import zoo

    recommender = zoo.load(args.model, directory=args.checkpoint)
    if args.export:
        from zoo.recommender.export import export_saved_model

        path = export_saved_model(recommender, args.export)
        print(f"SavedModel written to {path}")
        if not args.history:
            return 0
    if not args.history:
        raise ValueError("--history is required (comma-separated item ids, oldest first). "
                         "Received: --history=")
    history = _split_ids(args.history)
    user = _parse_user(args.user)
    if user and not recommender.user_feature_fields:
        raise ValueError(f"{args.model} takes no user features. Received: --user={args.user}")
    unknown = "ignore" if args.ignore_unknown else "error"
    ids, scores = recommender.recommend(history, k=args.k, user_features=user,
                                        unknown=unknown)
    titles = _titles(recommender)
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
    for row in result["recommendations"]:
        title = f"  {row['title']}" if "title" in row else ""
        print(f"{row['rank']:>4}  {row['item_id']:<12} {row['score']:8.3f}{title}")
    if args.explain:
        print("Attention of the next-item prediction over the history (last block):")
        for row in result["attention"]:
            title = f"  {row['title']}" if "title" in row else ""
            print(f"      {row['item_id']:<12} {row['weight']:8.3f}{title}")
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
    parser.add_argument("--user", default="",
                        help="BST models: user features, e.g. age=31,gender=F,occupation=writer")
    parser.add_argument("--ignore-unknown", action="store_true",
                        help="drop history ids not in the catalogue instead of failing")
    parser.add_argument("--explain", action="store_true",
                        help="also print the attention over the history")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder (default: the zoo's folder for --model)")
    parser.add_argument("--export", default="",
                        help="write a TensorFlow SavedModel of the model to this folder")
    parser.set_defaults(func=run)
