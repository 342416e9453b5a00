"""Small untrained recommenders and checkpoints for the recommender tests."""

import numpy as np

from zoo import checkpoint
from zoo.recommender import recommender as recommender_lib
from zoo.recommender.backbone import ModelConfig, build_models

ITEM_IDS = [f"i{n}" for n in range(1, 31)]
USER_FEATURES = {"age": ["0", "1", "2"], "gender": ["F", "M"]}
BUCKETS = {"age": [18, 25]}


def make_recommender(architecture="sasrec", max_length=6):
    config = ModelConfig(
        architecture=architecture, num_items=len(ITEM_IDS), max_length=max_length,
        hidden_dim=8, num_blocks=2, num_heads=2, intermediate_dim=16, dropout=0.0,
        num_item_features=3 if architecture == "bst" else 0,
        user_feature_sizes=[4, 3] if architecture == "bst" else [],
    )
    models = build_models(config)
    if architecture == "bst":
        features = np.random.default_rng(0).integers(0, 2, (31, 3)).astype("float32")
        features[0] = 0
        models["item_embedding"].set_features(features)
    bst = architecture == "bst"
    return recommender_lib.SequentialRecommender(
        models, config, ITEM_IDS,
        user_features=USER_FEATURES if bst else None,
        user_feature_buckets=BUCKETS if bst else None,
    )


def write_tiny_checkpoint(directory, recommender, name="recommender_ml100k_sasrec"):
    weights = directory.parent / f"{directory.name}.weights.h5"
    recommender.models["training"].save_weights(str(weights))
    manifest = {
        "name": name,
        "task": "recommend",
        "recipe": "python -m recipes.train_recommender",
        "config": {"network": recommender.config.to_dict()},
        "data": {"source": "test"},
        "metrics": {"ndcg@10": 0.1},
        "main_metric": "ndcg@10",
        "baselines": {},
    }
    return checkpoint.write_checkpoint(
        directory,
        {
            recommender_lib.WEIGHTS_FILE: weights,
            recommender_lib.VOCABULARY_FILE: recommender_lib.vocabulary_payload(
                recommender.item_ids, recommender.user_features,
                recommender.user_feature_buckets),
        },
        manifest,
    )
