"""The online energy model: law recovery, prequential accuracy, prior, intervals, state."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from lightning_to_energy.model import regression
from lightning_to_energy.model.regression import (
    FEATURES,
    OnlineEnergyModel,
    Prior,
    feature_unit,
    log_interval_half_width,
)

STATIC_W = 300.0  # the synthetic law: 300 W x duration + 2e-12 J/TO x TOs
J_PER_TO = 2e-12
NAMES = ("duration_s", "tos")


def law_j(duration_s: float, tos: float) -> float:
    return STATIC_W * duration_s + J_PER_TO * tos


def varied_windows(n: int, seed: int) -> list[tuple[dict[str, float], float]]:
    """Windows whose durations and TOs vary independently (not collinear)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = float(rng.uniform(2.0, 6.0))
        t = float(rng.uniform(5e13, 1e15))
        out.append(({"duration_s": d, "tos": t}, law_j(d, t)))
    return out


def test_recovers_law_within_2_percent_and_prequential_error_falls() -> None:
    model = OnlineEnergyModel(NAMES)
    preds = [model.update(x, y) for x, y in varied_windows(20, seed=0)]
    coef = model.coefficients
    assert coef["duration_s"] == pytest.approx(STATIC_W, rel=0.02)
    assert coef["tos"] == pytest.approx(J_PER_TO, rel=0.02)
    assert model.identifiable
    # the first window has no prediction (no prior); every later one does
    assert [p.source for p in preds[:2]] == ["none", "fit"]
    assert model.accuracy().n == 19
    recent = model.accuracy(recent=10).recent
    assert recent is not None and recent.n == 10
    assert recent.mape < 0.02
    assert recent.precision_pct > 98.0
    assert model.units() == {"duration_s": "W", "tos": "J/TO"}


def test_recovers_law_with_noise() -> None:
    rng = np.random.default_rng(7)
    model = OnlineEnergyModel(NAMES)
    for x, y in varied_windows(60, seed=1):
        model.update(x, y * (1.0 + 0.005 * float(rng.standard_normal())))
    coef = model.coefficients
    assert coef["duration_s"] == pytest.approx(STATIC_W, rel=0.02)
    assert coef["tos"] == pytest.approx(J_PER_TO, rel=0.02)
    recent = model.accuracy().recent
    assert recent is not None and recent.mape < 0.02


def test_default_features_accept_a_mapping_with_extra_keys() -> None:
    law = {"duration_s": 120.0, "tos_matrix_full": 1e-11, "tos_vector": 4e-12, "bytes": 1e-9}
    rng = np.random.default_rng(3)
    model = OnlineEnergyModel()
    assert model.feature_names == FEATURES
    for _ in range(40):
        x = {name: float(rng.uniform(1.0, 4.0)) for name in FEATURES}
        x["tos_matrix_full"] *= 1e13
        x["tos_matrix_reduced"] = 0.0  # an fp32-only run: no reduced-precision matrix work
        x["tos_vector"] *= 1e12
        x["bytes"] *= 1e10
        x["kernels"] *= 1e3
        x["flops"] = 123.0  # not a model feature: ignored
        model.update(x, sum(c * x[name] for name, c in law.items()))
    coef = model.coefficients
    for name, c in law.items():
        assert coef[name] == pytest.approx(c, rel=0.02)
    # not in the law: at most 4e3 kernels per window must explain under 0.1 J of >= 120 J
    assert coef["kernels"] * 4e3 < 0.1
    # never seen, so set by the all-zero default prior
    assert coef["tos_matrix_reduced"] == 0.0
    diag = model.diagnostics()
    assert diag.unused == ("tos_matrix_reduced",)
    assert diag.identifiable


def collinear_windows(n: int, seed: int) -> list[tuple[dict[str, float], float]]:
    """Every window is k steps of one profile: duration and TOs both proportional to k."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(20, 60))
        d, t = 0.1 * k, 4e13 * k
        out.append(({"duration_s": d, "tos": t}, law_j(d, t)))
    return out


def test_collinear_windows_predict_well_but_are_flagged_unidentifiable() -> None:
    model = OnlineEnergyModel(NAMES)
    windows = collinear_windows(15, seed=2)
    preds = [model.update(x, y) for x, y in windows]
    lam = regression.DEFAULT_PRIOR_STRENGTH
    for n, (pred, (_, y)) in enumerate(zip(preds[1:], windows[1:], strict=True), start=1):
        # after n identical-ratio windows, scaled z_d + z_t = u minimises
        # n (u - 1)^2 + lam u^2 / 2 (the zero prior), so u = n / (n + lam / 2): the
        # prediction is low by the ridge shrinkage lam / (2 n + lam) only
        assert pred.energy_j == pytest.approx(y * n / (n + lam / 2), rel=1e-9)
    diag = model.diagnostics()
    assert not model.identifiable and not diag.identifiable
    assert diag.effective_rank == 1
    assert diag.condition_number > regression.CONDITION_LIMIT
    assert set(diag.undetermined) == {"duration_s", "tos"}
    # the data fix only the energy per step: 300 W x 0.1 s + 2e-12 J/TO x 4e13 TO = 110 J,
    # shrunk by the ridge as above after 15 windows: 110 * 15 / (15 + lam / 2)
    coef = model.coefficients
    per_step = coef["duration_s"] * 0.1 + coef["tos"] * 4e13
    assert per_step == pytest.approx(110.0 * 15 / (15 + lam / 2), rel=1e-9)


def test_prior_sets_the_split_the_data_cannot() -> None:
    windows = collinear_windows(15, seed=2)
    prior = Prior({"duration_s": 250.0, "tos": 2.5e-12})
    with_prior = OnlineEnergyModel(NAMES, prior=prior)
    without = OnlineEnergyModel(NAMES)
    for x, y in windows:
        with_prior.update(x, y)
        without.update(x, y)
    # Both fit 110 J per step. Scaled coefficients z = c * s with s = feature per joule =
    # (0.1 / 110, 4e13 / 110), so every window says z_d + z_t = 1. The prior sits at
    # z0 = (250 * 0.1 / 110, 2.5e-12 * 4e13 / 110) = (25/110, 100/110); the ridge keeps its
    # z_d - z_t = -75/110, so z = ((1 - 75/110) / 2, (1 + 75/110) / 2) = (17.5/110, 92.5/110):
    # c_d = 17.5 / 0.1 = 175 W, c_t = 92.5 / 4e13 = 2.3125e-12 J/TO (ridge shift ~5e-5).
    c = with_prior.coefficients
    assert c["duration_s"] == pytest.approx(175.0, rel=1e-3)
    assert c["tos"] == pytest.approx(2.3125e-12, rel=1e-3)
    # without a prior the pull is toward 0: z = (1/2, 1/2), c_d = 55 / 0.1 = 550 W,
    # c_t = 55 / 4e13 = 1.375e-12 J/TO
    c0 = without.coefficients
    assert c0["duration_s"] == pytest.approx(550.0, rel=1e-3)
    assert c0["tos"] == pytest.approx(1.375e-12, rel=1e-3)


def test_prior_predicts_before_the_first_window_and_none_without_it() -> None:
    x = {"duration_s": 2.0, "tos": 1e14}
    pred = OnlineEnergyModel(NAMES, prior=Prior({"duration_s": 100.0, "tos": 1e-12})).predict(x)
    # 100 W x 2 s + 1e-12 J/TO x 1e14 TO = 200 + 100 = 300 J
    assert pred.source == "prior" and pred.available
    assert pred.energy_j == pytest.approx(300.0)
    # no errors yet: the default factor 1.5 -> [300 / 1.5, 300 * 1.5] = [200, 450]
    assert pred.low_j == pytest.approx(200.0)
    assert pred.high_j == pytest.approx(450.0)
    assert pred.n_windows == 0
    none = OnlineEnergyModel(NAMES).predict(x)
    assert none.source == "none" and not none.available
    assert (none.energy_j, none.low_j, none.high_j) == (None, None, None)


def test_one_window_fit_keeps_the_prior_split_and_matches_the_level() -> None:
    model = OnlineEnergyModel(NAMES, prior=Prior({"duration_s": 100.0, "tos": 1e-12}))
    first = model.update({"duration_s": 2.0, "tos": 1e14}, 600.0)
    # predicted from the prior: 100 * 2 + 1e-12 * 1e14 = 300 J
    assert first.source == "prior" and first.energy_j == pytest.approx(300.0)
    second = model.predict({"duration_s": 4.0, "tos": 2e14})
    # the same profile, twice as long: twice the measured 600 J = 1200 J (ridge bias < 1 %)
    assert second.source == "fit"
    assert second.energy_j == pytest.approx(1200.0, rel=0.01)
    assert not model.identifiable  # one window cannot separate two coefficients


def test_accuracy_figures_by_hand_on_three_windows() -> None:
    # prior_strength=0: the one-feature fits are exact, so every prediction is known by hand
    model = OnlineEnergyModel(("duration_s",), prior=Prior({"duration_s": 100.0}), prior_strength=0)
    p1 = model.update([2.0], 500.0)  # prior: 100 W x 2 s = 200 J; the fit then gives 250 W
    p2 = model.update([4.0], 1000.0)  # 250 W x 4 s = 1000 J; both windows say 250 W
    p3 = model.update([2.0], 400.0)  # 250 W x 2 s = 500 J
    assert [p1.energy_j, p2.energy_j, p3.energy_j] == pytest.approx([200.0, 1000.0, 500.0])
    acc = model.accuracy(recent=2)
    # relative errors: |200-500|/500 = 0.6, |1000-1000|/1000 = 0, |500-400|/400 = 0.25
    assert acc.n == 3
    # MAPE = (0.6 + 0 + 0.25) / 3 = 0.283333...
    assert acc.mape == pytest.approx(0.85 / 3)
    # precision = 100 x (1 - 0.283333) = 71.6667 %
    assert acc.precision_pct == pytest.approx(100 * (1 - 0.85 / 3))
    assert acc.median_rel_err == pytest.approx(0.25)
    assert acc.worst_rel_err == pytest.approx(0.6)
    # mean measured = 1900 / 3 = 633.33; SS_tot = 133.33^2 + 366.67^2 + 233.33^2 = 206666.67;
    # SS_res = 300^2 + 0^2 + 100^2 = 100000; R^2 = 1 - 100000 / 206666.67 = 0.516129
    assert acc.r2 == pytest.approx(1 - 100000 / 206666.6667, rel=1e-6)
    # 200 + 1000 + 500 = 1700 J predicted against 500 + 1000 + 400 = 1900 J measured
    assert (acc.predicted_j, acc.measured_j) == pytest.approx((1700.0, 1900.0))
    recent = acc.recent
    assert recent is not None and recent.n == 2
    # last two windows: (0 + 0.25) / 2 = 0.125
    assert recent.mape == pytest.approx(0.125)
    assert recent.worst_rel_err == pytest.approx(0.25)
    d = acc.to_dict()
    assert d["n"] == 3 and d["mape"] == pytest.approx(0.85 / 3)
    json.dumps(d)


def test_accuracy_before_any_prediction_is_nan_and_json_safe() -> None:
    acc = OnlineEnergyModel(NAMES).accuracy()
    assert acc.n == 0 and math.isnan(acc.mape) and math.isnan(acc.precision_pct)
    assert acc.to_dict()["mape"] is None


def test_seeded_windows_count_half() -> None:
    model = OnlineEnergyModel(("duration_s",), prior_strength=0)
    assert model.seed([([1.0], 200.0)]) == 1  # an earlier run: 200 W, weight 0.5
    model.update([1.0], 300.0)  # this run: 300 W, weight 1
    # minimise 0.5 (P/200 - 1)^2 + (P/300 - 1)^2:
    # P = (0.5/200 + 1/300) / (0.5/200^2 + 1/300^2) = 0.00583333 / 2.3611e-5 = 247.0588 W
    assert model.coefficients["duration_s"] == pytest.approx(247.0588, rel=1e-5)
    assert model.history_windows() == [({"duration_s": 1.0}, 300.0)]
    assert len(model.history_windows(include_seeded=True)) == 2
    with pytest.raises(RuntimeError, match="before the first update"):
        model.seed([([1.0], 200.0)])


def test_history_is_bounded() -> None:
    model = OnlineEnergyModel(NAMES, history=5)
    for x, y in varied_windows(8, seed=4):
        model.update(x, y)
    assert model.n_windows == 5
    assert model.n_updates == 8
    assert len(model.state_dict()["windows"]["energy_j"]) == 5


def test_state_round_trip_predicts_identically() -> None:
    model = OnlineEnergyModel(NAMES, prior=Prior({"duration_s": 200.0}, strength=0.05))
    windows = varied_windows(16, seed=5)
    for x, y in windows[:12]:
        model.update(x, y)
    state = json.loads(json.dumps(model.state_dict(), allow_nan=False))
    restored = OnlineEnergyModel.from_state_dict(state)
    other = OnlineEnergyModel(NAMES)
    other.load_state_dict(state)
    assert restored.coefficients == model.coefficients == other.coefficients
    assert restored.accuracy() == model.accuracy()
    assert restored.diagnostics() == model.diagnostics()
    for x, y in windows[12:]:
        assert restored.predict(x) == model.predict(x)
        assert restored.update(x, y) == model.update(x, y)
    assert restored.coefficients == model.coefficients
    assert restored.state_dict() == model.state_dict()


def test_state_from_other_features_is_refused() -> None:
    state = OnlineEnergyModel(NAMES).state_dict()
    with pytest.raises(ValueError, match=r"expected features \['duration_s'\]"):
        OnlineEnergyModel(("duration_s",)).load_state_dict(state)


@pytest.mark.parametrize(
    ("x", "energy_j", "match"),
    [
        ({"duration_s": 1.0}, 10.0, r"missing \['tos'\]"),
        ({"duration_s": -1.0, "tos": 1.0}, 10.0, "feature 'duration_s': expected a finite"),
        ({"duration_s": 1.0, "tos": math.nan}, 10.0, "feature 'tos': expected a finite"),
        ([1.0], 10.0, "expected 2 values"),
        ("12", 10.0, "expected a mapping or a sequence"),
        ([1.0, 1.0], 0.0, "energy_j: expected a finite number of joules > 0"),
        ([1.0, 1.0], -5.0, "energy_j: expected"),
        ([1.0, 1.0], math.inf, "energy_j: expected"),
    ],
)
def test_bad_inputs_raise_and_leave_the_model_unchanged(
    x: object, energy_j: float, match: str
) -> None:
    model = OnlineEnergyModel(NAMES)
    model.update([1.0, 1e12], 302.0)
    before = model.state_dict()
    with pytest.raises(ValueError, match=match) as info:
        model.update(x, energy_j)  # type: ignore[arg-type]
    assert "fix:" in str(info.value)
    assert model.state_dict() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"feature_names": ()}, "feature_names: expected a non-empty"),
        ({"feature_names": ("a", "a")}, r"duplicates \['a'\]"),
        ({"history": 0}, "history: expected an int >= 1"),
        ({"interval": 1.0}, "interval: expected a coverage"),
        ({"prior_strength": -1.0}, "prior_strength: expected"),
        ({"prior": Prior({"duration": 1.0})}, r"unknown \['duration'\]"),
    ],
)
def test_bad_construction_raises(kwargs: dict[str, object], match: str) -> None:
    kwargs.setdefault("feature_names", NAMES)
    with pytest.raises(ValueError, match=match):
        OnlineEnergyModel(**kwargs)  # type: ignore[arg-type]


def test_prior_rejects_negative_coefficients() -> None:
    with pytest.raises(ValueError, match="expected a finite number >= 0"):
        Prior({"duration_s": -3.0})


def test_interval_half_width_by_hand() -> None:
    # fewer than 5 scores: max(ln 1.5, largest score)
    assert log_interval_half_width([0.1, 0.2], 0.9) == pytest.approx(math.log(1.5))
    assert log_interval_half_width([0.1, 0.9], 0.9) == pytest.approx(0.9)
    scores = [0.01 * i for i in range(1, 10)]  # 0.01 .. 0.09
    # n = 9: k = ceil(10 * 0.9) = 9 -> the 9th smallest = 0.09
    assert log_interval_half_width(scores, 0.9) == pytest.approx(0.09)
    # k = ceil(10 * 0.5) = 5 -> 0.05
    assert log_interval_half_width(scores, 0.5) == pytest.approx(0.05)
    # n = 5: k = min(ceil(6 * 0.9), 5) = 5 -> 0.05
    assert log_interval_half_width(scores[:5], 0.9) == pytest.approx(0.05)


def test_prediction_interval_narrows_with_good_windows() -> None:
    model = OnlineEnergyModel(NAMES)
    for x, y in varied_windows(12, seed=6):
        model.update(x, y)
    x = {"duration_s": 3.0, "tos": 3e14}
    pred = model.predict(x)
    # 300 x 3 + 2e-12 x 3e14 = 900 + 600 = 1500 J
    assert pred.energy_j == pytest.approx(1500.0, rel=0.01)
    assert pred.low_j is not None and pred.high_j is not None
    assert pred.low_j <= pred.energy_j <= pred.high_j
    # the interval's half width is one of the recorded |ln(measured / predicted)| errors
    q = math.log(pred.high_j / pred.energy_j)
    assert q == pytest.approx(math.log(pred.energy_j / pred.low_j))
    assert q < math.log(1.5)


def test_feature_units() -> None:
    units = {name: feature_unit(name) for name in (*FEATURES, "flops", "other")}
    assert units == {
        "duration_s": "W",
        "tos_matrix_full": "J/TO",
        "tos_matrix_reduced": "J/TO",
        "tos_vector": "J/TO",
        "bytes": "J/B",
        "kernels": "J/kernel",
        "flops": "J/FLOP",
        "other": "J/other",
    }


def test_docstring_example_runs() -> None:
    failures, tried = doctest.testmod(regression, verbose=False)
    assert tried > 0 and failures == 0


def test_failed_refit_warns_and_keeps_the_coefficients(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    model = OnlineEnergyModel(NAMES)
    for x, y in varied_windows(4, seed=8):
        model.update(x, y)
    before = model.coefficients

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("too many iterations")

    monkeypatch.setattr(scipy.optimize, "nnls", fail)
    with pytest.warns(RuntimeWarning, match="too many iterations"):
        model.update({"duration_s": 2.0, "tos": 1e14}, law_j(2.0, 1e14))
    assert model.coefficients == before
    assert model.n_windows == 5


def test_the_refit_solves_what_scikit_learn_solves() -> None:
    from sklearn.linear_model import LinearRegression

    # Noisy windows, some seeded (weight 0.5), and a prior: every row weight differs.
    model = OnlineEnergyModel(NAMES, prior=Prior({"duration_s": 200.0, "tos": 1e-12}))
    model.seed([({"duration_s": 3.0, "tos": 2e14}, 1500.0)])
    rng = np.random.default_rng(3)
    for x, y in varied_windows(12, seed=5):
        model.update(x, y * rng.uniform(0.9, 1.1))
    # The same problem handed to scikit-learn: design, target and weights as _refit builds them.
    B, w, s, _ = model._scaled_design()
    p = len(NAMES)
    design = np.vstack([B, np.eye(p)])
    target = np.concatenate([np.ones(len(w)), model._prior_vec * s])
    weight = np.concatenate([w, np.full(p, model._strength)])
    reference = LinearRegression(positive=True, fit_intercept=False)
    reference.fit(design, target, sample_weight=weight)
    ours = np.array([model.coefficients[n] for n in NAMES])
    assert (ours > 0).all()  # a real split of the energy, not two zeros agreeing
    np.testing.assert_allclose(ours, reference.coef_ / s, rtol=1e-9)


def test_recent_mape_is_the_recent_figure_of_accuracy() -> None:
    model = OnlineEnergyModel(NAMES)
    assert math.isnan(model.recent_mape())
    for x, y in varied_windows(15, seed=2):
        model.update(x, y * 1.05)  # a 5 % bias: errors are not all zero
    recent = model.accuracy(recent=10).recent
    assert recent is not None and recent.mape > 0
    assert model.recent_mape(10) == pytest.approx(recent.mape, rel=1e-12)


def test_interval_rank_is_conformal_n_plus_one_and_not_pushed_up_by_rounding() -> None:
    scores = [0.01 * i for i in range(1, 11)]  # 0.01 .. 0.10
    # n = 10: k = ceil(11 * 0.9) = ceil(9.9) = 10 -> the largest, 0.10 (ceil(10 * 0.9) = 9
    # would give 0.09: the (n + 1) is what makes the coverage at least 90 %)
    assert log_interval_half_width(scores, 0.9) == pytest.approx(0.10)
    # n = 24, interval 0.56: 25 * 0.56 is 14.000000000000002 in floats; k = 14 -> 0.14
    scores = [0.01 * i for i in range(1, 25)]
    assert log_interval_half_width(scores, 0.56) == pytest.approx(0.14)


def test_a_zero_prediction_is_scored_and_gives_an_unbounded_interval() -> None:
    # an all-zero prior predicts 0 J for the first window
    model = OnlineEnergyModel(("duration_s",), prior=Prior({"duration_s": 0.0}), prior_strength=0)
    first = model.update([2.0], 400.0)
    assert first.energy_j == 0.0 and first.source == "prior"
    acc = model.accuracy()
    # the 0 J prediction counts: |0 - 400| / 400 = 1
    assert (acc.n, acc.worst_rel_err, acc.mape) == (1, 1.0, 1.0)
    # |ln(400 / 0)| is infinite, so the interval is [0, inf) until it leaves the last errors
    pred = model.predict([1.0])
    # fitted: 400 J / 2 s = 200 W, so 200 J for 1 s
    assert pred.energy_j == pytest.approx(200.0)
    assert (pred.low_j, pred.high_j) == (0.0, math.inf)


def test_the_interval_is_drawn_from_the_last_interval_windows_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(regression, "INTERVAL_WINDOWS", 5)
    model = OnlineEnergyModel(("duration_s",), prior=Prior({"duration_s": 100.0}), prior_strength=0)
    model.update([1.0], 500.0)  # predicted 100 J: |ln(500 / 100)| = ln 5 = 1.609
    for _ in range(5):
        model.update([1.0], 500.0)  # the fit says 500 W: predicted exactly, score 0
    pred = model.predict([1.0])
    # the last 5 scores are all 0: n = 5, k = min(ceil(6 * 0.9), 5) = 5 -> q = 0, [500, 500];
    # with all 6 the 6th smallest, ln 5, would give [100, 2500]
    assert (pred.low_j, pred.energy_j, pred.high_j) == pytest.approx((500.0, 500.0, 500.0))


def test_recent_figures_cover_only_the_recent_windows() -> None:
    # the three windows of test_accuracy_figures_by_hand_on_three_windows: errors 0.6, 0, 0.25
    model = OnlineEnergyModel(("duration_s",), prior=Prior({"duration_s": 100.0}), prior_strength=0)
    for d, e in ((2.0, 500.0), (4.0, 1000.0), (2.0, 400.0)):
        model.update([d], e)
    recent = model.accuracy(recent=2).recent
    assert recent is not None
    # the last two errors 0 and 0.25: median (0 + 0.25) / 2 = 0.125 (all three: 0.25)
    assert recent.median_rel_err == pytest.approx(0.125)
    # fewer windows than asked for: all three, (0.6 + 0 + 0.25) / 3 = 0.283333
    assert model.recent_mape(10) == pytest.approx(0.85 / 3)


def test_prior_strength_counts_against_the_weighted_windows() -> None:
    # One feature, no prior coefficient (0), strength 1: minimise
    # sum_i w_i (c a_i - 1)^2 + 1 * (c s)^2, a_i = x_i / y_i, s^2 = sum w a^2 / sum w, so
    # c = sum w a / (sum w a^2 (1 + 1 / sum w)): the pull of one window's worth of evidence
    # against the windows' total weight. Seeded 200 J (w 0.5) and 300 J (w 1), both 1 s:
    # sum w a = 0.5 / 200 + 1 / 300 = 0.00583333; sum w a^2 = 0.5 / 200^2 + 1 / 300^2 =
    # 2.3611e-5; sum w = 1.5; c = 0.00583333 / (2.3611e-5 x 5/3) = 247.0588 x 0.6 = 148.2353 W
    model = OnlineEnergyModel(("duration_s",), prior_strength=1.0)
    model.seed([([1.0], 200.0)])
    model.update([1.0], 300.0)
    assert model.coefficients["duration_s"] == pytest.approx(148.2353, rel=1e-5)


def test_seed_keeps_at_most_the_history_and_says_so() -> None:
    model = OnlineEnergyModel(("duration_s",), history=2)
    # three earlier windows into a history of two: the two most recent stay
    assert model.seed([([1.0], 100.0), ([1.0], 200.0), ([1.0], 300.0)]) == 2
    assert [y for _, y in model.history_windows(include_seeded=True)] == [200.0, 300.0]


def test_state_round_trip_keeps_seeded_windows_seeded() -> None:
    model = OnlineEnergyModel(("duration_s",))
    model.seed([([1.0], 200.0)])
    model.update([1.0], 300.0)
    restored = OnlineEnergyModel.from_state_dict(json.loads(json.dumps(model.state_dict())))
    # the seeded window is still not this run's: one own window, two in all
    assert restored.history_windows() == [({"duration_s": 1.0}, 300.0)]
    assert len(restored.history_windows(include_seeded=True)) == 2


def test_roofline_and_step_features_have_physical_units() -> None:
    # roofline_s is a time like duration_s: its coefficient is a static power
    assert feature_unit("roofline_s") == "W"
    assert feature_unit("steps") == "J/step"


def test_one_window_for_two_features_is_rank_deficient() -> None:
    model = OnlineEnergyModel(NAMES)
    model.update({"duration_s": 2.0, "tos": 1e14}, 600.0)
    diag = model.diagnostics()
    # one row (padded with a zero row) cannot span two directions: a zero singular value
    assert diag.condition_number == math.inf
    assert (diag.effective_rank, diag.identifiable) == (1, False)


def test_the_prior_brings_its_own_strength_and_it_is_checked() -> None:
    model = OnlineEnergyModel(NAMES, prior=Prior({"duration_s": 100.0}, strength=0.05))
    assert model.state_dict()["prior_strength"] == 0.05
    # an explicit prior_strength wins over the prior's
    explicit = OnlineEnergyModel(
        NAMES, prior=Prior({"duration_s": 100.0}, strength=0.05), prior_strength=0.5
    )
    assert explicit.state_dict()["prior_strength"] == 0.5
    with pytest.raises(ValueError, match="Prior strength: expected a finite number >= 0"):
        Prior({"duration_s": 100.0}, strength=-1.0)


def test_precision_goes_negative_when_the_mean_error_exceeds_one() -> None:
    model = OnlineEnergyModel(("duration_s",), prior=Prior({"duration_s": 500.0}))
    model.update([2.0], 400.0)  # predicted 500 W x 2 s = 1000 J against 400 J
    acc = model.accuracy()
    # |1000 - 400| / 400 = 1.5 -> 100 x (1 - 1.5) = -50 %: reported as is, not clamped at 0
    assert acc.mape == pytest.approx(1.5)
    assert acc.precision_pct == pytest.approx(-50.0)
