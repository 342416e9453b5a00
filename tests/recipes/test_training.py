import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes import training
from recipes.config import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(128, 6).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(128, seed=0, reshuffle_each_iteration=True).batch(16))
    return ds, tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


def _build():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2)])


def _fit(workdir, epochs):
    config = TrainConfig(workdir=str(workdir), epochs=epochs, verbose=0, warmup_steps=4)
    keras.utils.set_random_seed(config.seed)  # as a fresh recipe process would be
    train_ds, valid_ds = _data()
    return training.fit(
        config, _build, train_ds, valid_ds,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
    )


def test_fit_writes_state_best_and_logs(tmp_path):
    model, info = _fit(tmp_path, epochs=2)
    assert info["resumed_from_epoch"] == 0 and info["steps_per_epoch"] == 8
    assert len(info["history"]["loss"]) == 2
    state = training.read_state(str(tmp_path))
    assert state["epoch"] == 2 and state["weights"] == "epoch-0002.weights.h5"
    backup = sorted(os.listdir(tmp_path / "backup"))
    assert backup == ["epoch-0002.weights.h5", "state.json"]  # no temporary files left
    assert (tmp_path / "best.weights.h5").exists()
    assert os.listdir(tmp_path / "logs")


def test_resume_continues_after_last_epoch_and_matches(tmp_path):
    _, straight = _fit(tmp_path / "straight", epochs=4)
    _fit(tmp_path / "resumed", epochs=2)
    _, resumed = _fit(tmp_path / "resumed", epochs=4)
    assert resumed["resumed_from_epoch"] == 2
    assert len(resumed["history"]["loss"]) == 2
    # Restored weights and optimizer state: the last epochs continue the straight run
    # (shuffle order may differ between runs in one process, hence the tolerance).
    np.testing.assert_allclose(resumed["history"]["loss"], straight["history"]["loss"][2:],
                               rtol=0.05)


def test_finished_run_is_not_retrained(tmp_path):
    _fit(tmp_path, epochs=1)
    _, info = _fit(tmp_path, epochs=1)
    assert info["history"] == {} and info["resumed_from_epoch"] == 1


def test_warmup_cosine_schedule_values():
    schedule = training.WarmupCosineSchedule(1.0, warmup_steps=4, total_steps=14,
                                             final_fraction=0.1)
    values = [float(schedule(step)) for step in (0, 3, 4, 9, 14, 20)]
    np.testing.assert_allclose(values, [0.25, 1.0, 1.0, 0.55, 0.1, 0.1], atol=1e-6)
    again = training.WarmupCosineSchedule.from_config(schedule.get_config())
    assert float(again(9)) == pytest.approx(0.55)


def test_precision_and_strategy_choices():
    assert training.choose_precision("auto") == "float32"  # CPU
    assert training.choose_precision("mixed_bfloat16") == "mixed_bfloat16"
    keras.mixed_precision.set_dtype_policy("float32")
    assert training.make_strategy("none").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy=gpus"):
        training.make_strategy("gpus")


def test_fit_gives_keras_nothing_to_warn_about(tmp_path):
    # A shuffled training set and a filtered validation set (tf.data cannot tell its
    # length): Keras warned that it ignores `shuffle=True` for a dataset, and that the
    # input "ran out of data" at the end of every validation pass.
    train_ds, valid_ds = _data()
    valid_ds = valid_ds.unbatch().filter(lambda x, y: x[0] > -1.0).batch(16)
    assert int(valid_ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    config = TrainConfig(workdir=str(tmp_path), epochs=2, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = training.fit(config, _build, train_ds, valid_ds,
                               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    assert len(info["history"]["val_loss"]) == 2


def test_fit_rejects_unknown_length_without_steps(tmp_path):
    ds = tf.data.Dataset.from_tensor_slices((np.ones((4, 6), "float32"), np.ones(4))).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        training.fit(TrainConfig(workdir=str(tmp_path)), _build, ds.batch(2), None, "mse")


def test_write_evaluation_prints_table_and_json(tmp_path, capsys):
    path = tmp_path / "evaluation.json"
    training.write_evaluation([{"model": "a", "bleu": 41.234}, {"model": "b", "bleu": 3.0}],
                              str(path), extra={"n": 5}, title="T")
    out = capsys.readouterr().out
    assert "model  bleu" in out and "41.23" in out
    assert json.loads(path.read_text()) == {
        "rows": [{"model": "a", "bleu": 41.234}, {"model": "b", "bleu": 3.0}], "n": 5}


_MIRRORED = r"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from recipes import quickstart, training
strategy = training.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
results = quickstart.main(["--smoke", "--strategy=mirrored", "--jit_compile=true",
                           "--workdir=" + sys.argv[1]])
assert results["test_accuracy"] > 0.2, results
print("OK", results["test_accuracy"])
"""


# Slow (25 to 50 s); .ci/run runs it with -m large.
@pytest.mark.large
def test_mirrored_strategy_over_two_logical_cpus_trains_smoke_config(tmp_path):
    # The script imports TensorFlow before `recipes`, so the oneDNN default of
    # recipes/__init__.py is passed explicitly (see there for why).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
               TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jit_compile disabled" in done.stdout  # XLA cannot span logical CPUs
    assert "OK" in done.stdout


def test_fit_with_remat_checkpoints_every_transformer_block(tmp_path, capsys):
    from keras_attention.layers import TransformerEncoderBlock

    def build():
        inputs = keras.Input((4, 6))
        x = TransformerEncoderBlock(2, 8, name="block_0")(inputs)
        x = TransformerEncoderBlock(2, 8, name="block_1")(x)
        return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))

    rng = np.random.RandomState(0)
    x, y = rng.randn(32, 4, 6).astype("float32"), rng.randint(0, 2, 32).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    config = TrainConfig(workdir=str(tmp_path), epochs=1, verbose=0, remat=True,
                         jit_compile=False)
    model, info = training.fit(config, build, ds, ds,
                               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert "gradient checkpointing in 2 Transformer blocks" in capsys.readouterr().out
    assert [layer.remat for layer in model.layers if isinstance(layer, TransformerEncoderBlock)] \
        == [True, True]
    assert np.isfinite(info["history"]["loss"][0])


def test_shard_batches_gives_each_process_an_even_slice_of_every_batch():
    ds = tf.data.Dataset.range(10).batch(4)  # batches of 4, 4 and 2
    shards = [[list(b.numpy()) for b in training.shard_batches(ds, 2, i, multiple=2)]
              for i in range(2)]
    assert shards == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [9]]]
    # Four devices: the last batch of 2 cannot be split and is dropped.
    pairs = tf.data.Dataset.from_tensor_slices((np.arange(10), -np.arange(10))).batch(4)
    shard = [(list(a.numpy()), list(b.numpy()))
             for a, b in training.shard_batches(pairs, 2, 1, multiple=4)]
    assert shard == [([2, 3], [-2, -3]), ([6, 7], [-6, -7])]


def test_process_index_and_chief_from_tf_config(monkeypatch):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert (training.process_count(), training.process_index()) == (3, 2)
    assert not training.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "chief", "index": 0}}))
    assert training.is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert (training.process_count(), training.process_index()) == (1, 0)
