"""Full-ranking evaluation: HR@k and NDCG@k over every item of the catalogue.

No negatives are sampled: the held-out item is ranked against all items, as
Krichene & Rendle (2020, "On Sampled Metrics for Item Recommendation") recommend,
because sampled metrics can reorder models. Items the user has already seen (the
history given to the model) and the padding index 0 are removed from the ranking
before the held-out item is placed; the held-out item itself is never in the
history (the data loaders keep one interaction per (user, item)).

Ties are broken uniformly at random in expectation: if `g` items score strictly
higher than the target and `t` others score the same, the target's rank is
uniform over `g .. g + t` (0-based) and the metrics are averaged over it. A model
that gives every item the same score thus gets exactly the value of a random
ranking, not a lucky first place.

- HR@k: the fraction of users whose target is among the top k.
- NDCG@k: with one relevant item, `1 / log2(rank + 2)` when `rank < k`, else 0.
"""

import numpy as np

CUTOFFS = (10, 20)


def _discount_prefix(length):
    # prefix[n] = sum_{r < n} 1 / log2(r + 2)
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(length) + 2.0))])


def expected_metrics(greater, ties, cutoffs=CUTOFFS):
    """HR@k and NDCG@k per user, in expectation over random tie-breaking.

    Args:
        greater: int array `(U,)`, items scoring strictly above the target.
        ties: int array `(U,)`, other items scoring exactly as the target.
        cutoffs: the values of k.

    Returns:
        `{f"hr@{k}": (U,) array, f"ndcg@{k}": (U,) array}`.
    """
    greater = np.asarray(greater, "int64")
    ties = np.asarray(ties, "int64")
    out = {}
    for k in cutoffs:
        prefix = _discount_prefix(k)
        low = np.minimum(greater, k)
        high = np.minimum(greater + ties + 1, k)
        out[f"hr@{k}"] = (high - low) / (ties + 1.0)
        out[f"ndcg@{k}"] = (prefix[high] - prefix[low]) / (ties + 1.0)
    return out


def rank_counts(scores, targets, histories):
    """`(greater, ties)` of each target among the allowed items.

    Args:
        scores: float `(U, num_items + 1)`; column 0 is padding.
        targets: int `(U,)` item indices.
        histories: per user, the item indices to exclude (already seen).
    """
    scores = np.array(scores, dtype="float64", copy=True)
    rows = np.arange(len(targets))
    scores[:, 0] = -np.inf
    for u, history in enumerate(histories):
        scores[u, np.asarray(history, "int64")] = -np.inf
    target_scores = scores[rows, targets]
    if not np.all(np.isfinite(target_scores)):
        bad = int(np.flatnonzero(~np.isfinite(target_scores))[0])
        raise ValueError(
            "A target item is in the user's history or its score is not finite, so it "
            f"cannot be ranked. Received: user row {bad}, target={int(targets[bad])}, "
            f"score={scores[bad, targets[bad]]}"
        )
    greater = np.sum(scores > target_scores[:, None], axis=1)
    ties = np.sum(scores == target_scores[:, None], axis=1) - 1
    return greater, ties


def evaluate_scores(score_fn, histories, targets, cutoffs=CUTOFFS, batch_size=512):
    """Mean full-ranking metrics of a scoring function.

    Args:
        score_fn: `f(users, histories) -> (len(users), num_items + 1)` scores for a
            batch of users: `users` are row numbers into `histories` (for models
            with a vector per user), `histories` their lists of item indices.
        histories: per user, the item indices seen before the target (also the
            items excluded from the ranking).
        targets: int `(U,)`, the held-out item of each user.
        cutoffs: the values of k.
        batch_size: users per call of `score_fn`.

    Returns:
        `{"hr@10": ..., "ndcg@10": ..., "hr@20": ..., "ndcg@20": ...}` (floats).
    """
    targets = np.asarray(targets, "int64")
    greater, ties = [], []
    for start in range(0, len(targets), batch_size):
        users = np.arange(start, min(start + batch_size, len(targets)))
        batch = [histories[u] for u in users]
        g, t = rank_counts(score_fn(users, batch), targets[users], batch)
        greater.append(g)
        ties.append(t)
    per_user = expected_metrics(np.concatenate(greater), np.concatenate(ties), cutoffs)
    result = {}
    for k in cutoffs:
        result[f"hr@{k}"] = float(np.mean(per_user[f"hr@{k}"]))
        result[f"ndcg@{k}"] = float(np.mean(per_user[f"ndcg@{k}"]))
    return result
