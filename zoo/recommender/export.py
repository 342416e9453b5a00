"""SavedModel export of a `SequentialRecommender`: raw item ids in, top-k out.

The serving signature (`serving_default`) takes

- `history`: string `(B, S)` item ids, oldest first; `""` is padding and may
  appear anywhere (left or right); ids not in the catalogue are ignored, as with
  `recommend(..., unknown="ignore")`. Only the last `max_length` known items are
  read by the network; all of them are excluded from the results.
- `k`: int32 scalar, the number of items to return (at most the catalogue size).
- BST models only: `user_features`, string `(B, F)`, one column per user
  feature field in the order of `recommender.user_feature_fields` (e.g. `age`,
  `gender`, `occupation`); `""` means unknown. Bucketed fields (age) take the
  number as a string, e.g. `"31"`.

and returns `item_ids` (string `(B, k)`) and `scores` (float32 `(B, k)`), best
first. When fewer than k unseen items exist the tail is `""` with score `-inf`.
Everything inside the graph is core TensorFlow (lookup tables, argsort, top_k),
so the SavedModel runs with `tensorflow` alone.

Example:

```python
from zoo.recommender.export import export_saved_model

export_saved_model(recommender, "/tmp/recommender_export")
# then, with TensorFlow only:
import tensorflow as tf
serve = tf.saved_model.load("/tmp/recommender_export").signatures["serving_default"]
serve(history=tf.constant([["", "50", "181"]]), k=tf.constant(5))["item_ids"]
```
"""

import pathlib


def _string_table(values):
    """A StaticHashTable from the strings `values` to 1..len(values) (0 = absent)."""
    import tensorflow as tf

    keys = tf.constant(list(values), tf.string)
    indices = tf.range(1, len(values) + 1, dtype=tf.int64)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, indices), default_value=0
    )


def _compact_right(ids, length):
    """Moves the non-zero ids of each row to its right end, keeping their order,
    then keeps the last `length` columns (left-padding with 0 when shorter)."""
    import tensorflow as tf

    width = tf.shape(ids)[1]
    positions = tf.range(width)[None, :]  # (1, S)
    key = tf.where(ids > 0, positions + width, positions)  # (B, S)
    order = tf.argsort(key, axis=1, stable=True)
    compact = tf.gather(ids, order, batch_dims=1)  # (B, S)
    compact = tf.pad(compact, [[0, 0], [tf.maximum(length - width, 0), 0]])
    return compact[:, -length:]  # (B, T)


def export_saved_model(recommender, path):
    """Writes `recommender` as a TensorFlow SavedModel at `path` (a folder).

    Needs the TensorFlow backend. Returns `path` as a `pathlib.Path`.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow). "
            f"Received: backend={keras.backend.backend()}"
        )
    config = recommender.config
    width = config.num_items + 1
    length = config.max_length
    model = recommender.models["scoring"]
    item_table = _string_table(recommender.item_ids)
    id_strings = tf.constant([""] + list(recommender.item_ids), tf.string)
    fields = recommender.user_feature_fields
    field_tables = {f: _string_table(recommender.user_features[f]) for f in fields}
    buckets = {
        f: tf.constant(recommender.user_feature_buckets[f], tf.float32)
        for f in fields if f in recommender.user_feature_buckets
    }

    def encode_field(field, values):
        values = tf.strings.strip(values)
        empty = tf.equal(values, "")
        if field in buckets:
            numbers = tf.strings.to_number(tf.where(empty, "0", values), tf.float32)
            # Boundaries at or below the value (numpy searchsorted, side="right").
            bucket = tf.reduce_sum(
                tf.cast(numbers[:, None] >= buckets[field][None, :], tf.int32), axis=1)
            values = tf.strings.as_string(bucket)
        index = field_tables[field].lookup(values)
        return tf.cast(tf.where(empty, tf.zeros_like(index), index), tf.int32)

    def serve(history, k, user_features=None):
        ids = tf.cast(item_table.lookup(tf.strings.strip(history)), tf.int32)  # (B, S)
        inputs = {"history": _compact_right(ids, length)}
        if fields:
            inputs["user_features"] = tf.stack(
                [encode_field(f, user_features[:, j]) for j, f in enumerate(fields)],
                axis=1)  # (B, F)
        scores = tf.cast(model(inputs, training=False), tf.float32)  # (B, V)
        seen = tf.reduce_max(tf.one_hot(ids, width, dtype=tf.float32), axis=1)  # (B, V)
        seen = tf.maximum(seen, tf.one_hot(0, width, dtype=tf.float32)[None, :])
        scores = tf.where(seen > 0, tf.constant(-float("inf"), tf.float32), scores)
        top = tf.math.top_k(scores, tf.minimum(k, config.num_items))
        names = tf.gather(id_strings, top.indices)
        names = tf.where(tf.math.is_finite(top.values), names, "")
        return {"item_ids": names, "scores": top.values}

    signature = [tf.TensorSpec((None, None), tf.string, name="history"),
                 tf.TensorSpec((), tf.int32, name="k")]
    if fields:
        signature.append(
            tf.TensorSpec((None, len(fields)), tf.string, name="user_features"))
        endpoint = serve
    else:
        def endpoint(history, k):
            return serve(history, k)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(item_table)
    for table in field_tables.values():
        archive.track(table)
    archive.add_endpoint("serving_default", endpoint, input_signature=signature)
    path = pathlib.Path(path)
    archive.write_out(str(path), verbose=False)
    return path
