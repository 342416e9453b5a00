"""Classic recommenders the sequential models are compared with, in NumPy/SciPy.

- `MostPopular`: every user gets the items with the most interactions.
- `ItemKNN`: item-item co-occurrence kNN (Sarwar et al. 2001; Deshpande & Karypis
  2004): cosine similarity of the items' user sets, shrunk, each item keeping its
  `neighbors` most similar items; a user's score for an item is the sum of its
  similarities to the items in the history.
- `BPRMF`: matrix factorisation trained with Bayesian Personalised Ranking
  (Rendle et al. 2009): SGD on `log sigmoid(x_ui - x_uj)` for an observed item i
  and a uniformly sampled unobserved item j, with L2 regularisation.

All three are fitted on per-user histories of item indices (1-based; 0 is
padding) and give `scores(users, histories) -> (len(users), num_items + 1)`, the
interface of `metrics.evaluate_scores`. Column 0 (padding) is never meaningful.
`tune_and_evaluate` picks each baseline's hyperparameters on the validation
targets, refits it on the training plus validation interactions and reports the
test metrics.
"""

import time

import numpy as np
import scipy.sparse as sp

from zoo.recommender import metrics as metrics_lib


def interaction_matrix(histories, num_items):
    """Binary CSR `(U, num_items + 1)` matrix of the histories."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, "int64") for h in histories]) if histories else []
    data = np.ones(len(rows), "float32")
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(histories), num_items + 1))
    matrix.data[:] = 1.0  # duplicates count once
    return matrix


class MostPopular:
    """Scores items by their number of interactions in the fitted histories."""

    name = "most_popular"

    def __init__(self, num_items):
        self.num_items = num_items

    def fit(self, histories):
        counts = np.bincount(
            np.concatenate([np.asarray(h, "int64") for h in histories]),
            minlength=self.num_items + 1,
        ).astype("float32")
        counts[0] = 0.0
        self.counts = counts
        return self

    def scores(self, users, histories):
        return np.broadcast_to(self.counts, (len(histories), self.num_items + 1))


class ItemKNN:
    """Item-item cosine kNN on co-occurrence in user histories.

    `sim(i, j) = c_ij / (sqrt(n_i * n_j) + shrink)` where `c_ij` counts users with
    both items and `n_i` users with item i; the diagonal is zero and each item
    keeps only its `neighbors` largest similarities (0 keeps all).
    """

    name = "item_knn"

    def __init__(self, num_items, neighbors=100, shrink=10.0):
        self.num_items = num_items
        self.neighbors = int(neighbors)
        self.shrink = float(shrink)

    def fit(self, histories):
        x = interaction_matrix(histories, self.num_items)
        co = (x.T @ x).toarray().astype("float32")  # (V+1, V+1)
        counts = np.diag(co).copy()
        norm = np.sqrt(np.outer(counts, counts)) + self.shrink
        sim = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
        np.fill_diagonal(sim, 0.0)
        if 0 < self.neighbors < sim.shape[1]:
            # Keep the top `neighbors` entries of each row (item -> its neighbours).
            cut = np.argpartition(-sim, self.neighbors, axis=1)[:, self.neighbors:]
            np.put_along_axis(sim, cut, 0.0, axis=1)
        self.similarity = sp.csr_matrix(sim)
        return self

    def scores(self, users, histories):
        x = interaction_matrix(histories, self.num_items)
        return np.asarray((x @ self.similarity).todense())


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class BPRMF:
    """Matrix factorisation trained with the BPR pairwise loss (NumPy SGD).

    Args:
        num_items: catalogue size (items are 1..num_items).
        factors: latent dimension.
        learning_rate: SGD step.
        regularization: L2 weight on the factors and item biases involved in a step.
        epochs: passes over the observed interactions.
        batch_size: triples per vectorised update.
        seed: initialisation and sampling seed.
    """

    name = "bpr_mf"

    def __init__(self, num_items, factors=64, learning_rate=0.05, regularization=1e-3,
                 epochs=30, batch_size=256, seed=0):
        self.num_items = num_items
        self.factors = int(factors)
        self.learning_rate = float(learning_rate)
        self.regularization = float(regularization)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.seed = seed

    def fit(self, histories, callback=None):
        """Trains from scratch; `callback(epoch, model)` runs after every epoch and
        may return True to stop."""
        rng = np.random.default_rng(self.seed)
        num_users = len(histories)
        width = self.num_items + 1
        self.user_factors = rng.normal(0, 0.1, (num_users, self.factors)).astype("float32")
        self.item_factors = rng.normal(0, 0.1, (width, self.factors)).astype("float32")
        self.item_bias = np.zeros(width, "float32")
        users = np.repeat(np.arange(num_users), [len(h) for h in histories])
        items = np.concatenate([np.asarray(h, "int64") for h in histories])
        observed = np.unique(users * width + items)
        lr, reg = self.learning_rate, self.regularization
        for epoch in range(self.epochs):
            order = rng.permutation(len(users))
            negatives = rng.integers(1, width, size=len(users))
            # Resample negatives that the user has seen (a few rounds suffice).
            for _ in range(10):
                clash = np.isin(users[order] * width + negatives, observed)
                if not clash.any():
                    break
                negatives[clash] = rng.integers(1, width, size=int(clash.sum()))
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                u, i = users[batch], items[batch]
                j = negatives[start:start + self.batch_size]
                pu = self.user_factors[u]
                qi, qj = self.item_factors[i], self.item_factors[j]
                x = np.sum(pu * (qi - qj), axis=1) + self.item_bias[i] - self.item_bias[j]
                g = _sigmoid(-x)[:, None]  # d log sigmoid(x) / dx
                np.add.at(self.user_factors, u, lr * (g * (qi - qj) - reg * pu))
                np.add.at(self.item_factors, i, lr * (g * pu - reg * qi))
                np.add.at(self.item_factors, j, lr * (-g * pu - reg * qj))
                np.add.at(self.item_bias, i, lr * (g[:, 0] - reg * self.item_bias[i]))
                np.add.at(self.item_bias, j, lr * (-g[:, 0] - reg * self.item_bias[j]))
            if callback is not None and callback(epoch + 1, self):
                break
        return self

    def scores(self, users, histories):
        users = np.asarray(users)
        return self.user_factors[users] @ self.item_factors.T + self.item_bias[None, :]


def tune_and_evaluate(split, num_items, knn_neighbors=(20, 50, 100, 200),
                      bpr_regularization=(1e-4, 1e-3, 1e-2), bpr_epochs=60,
                      bpr_eval_every=5, seed=0, log=print):
    """Tunes each baseline on validation, refits on train + validation, tests.

    - most popular: nothing to tune.
    - item kNN: `neighbors` from `knn_neighbors`.
    - BPR-MF: `regularization` from `bpr_regularization` and the number of epochs
      (validation every `bpr_eval_every` epochs up to `bpr_epochs`, stopping after
      three evaluations without improvement).

    The selection criterion is validation NDCG@10. The chosen configuration is
    refitted on the test histories (training + validation interactions) and
    evaluated on the test targets.

    Returns:
        `(test_metrics, details)`: `{name: {metric: value}}` and
        `{name: {"params": ..., "valid": {metric: value}, "seconds": ...}}`.
    """
    valid_h, test_h = split.valid_histories(), split.test_histories()
    results, details = {}, {}

    def valid_score(model):
        return metrics_lib.evaluate_scores(model.scores, valid_h, split.valid_targets)

    def record(name, params, valid, make, start):
        final = make().fit(test_h)
        results[name] = metrics_lib.evaluate_scores(final.scores, test_h, split.test_targets)
        details[name] = {"params": params, "valid": valid,
                         "seconds": round(time.perf_counter() - start, 1)}
        log(f"  {name} {params}: valid ndcg@10={valid['ndcg@10']:.4f} "
            f"test ndcg@10={results[name]['ndcg@10']:.4f}")

    start = time.perf_counter()
    record(MostPopular.name, {}, valid_score(MostPopular(num_items).fit(valid_h)),
           lambda: MostPopular(num_items), start)

    start = time.perf_counter()
    best = None
    for k in knn_neighbors:
        score = valid_score(ItemKNN(num_items, k).fit(valid_h))
        if best is None or score["ndcg@10"] > best[1]["ndcg@10"]:
            best = (k, score)
    record(ItemKNN.name, {"neighbors": best[0]}, best[1],
           lambda: ItemKNN(num_items, best[0]), start)

    start = time.perf_counter()
    best = None
    for regularization in bpr_regularization:
        trace = []

        def callback(epoch, model, trace=trace):
            if epoch % bpr_eval_every:
                return False
            trace.append((valid_score(model), epoch))
            top = max(range(len(trace)), key=lambda i: trace[i][0]["ndcg@10"])
            return len(trace) - 1 - top >= 3

        BPRMF(num_items, regularization=regularization, epochs=bpr_epochs,
              seed=seed).fit(valid_h, callback=callback)
        if not trace:  # fewer epochs than one evaluation period
            model = BPRMF(num_items, regularization=regularization, epochs=bpr_epochs,
                          seed=seed).fit(valid_h)
            trace.append((valid_score(model), bpr_epochs))
        score, epochs = max(trace, key=lambda t: t[0]["ndcg@10"])
        if best is None or score["ndcg@10"] > best[2]["ndcg@10"]:
            best = (regularization, epochs, score)
    record(BPRMF.name, {"regularization": best[0], "epochs": best[1]}, best[2],
           lambda: BPRMF(num_items, regularization=best[0], epochs=best[1], seed=seed),
           start)
    return results, details
