"""The physical step model as the online regression's prior (model/physical_live.py) and
``OnlineEnergyModel.set_prior``: exact for one step signature, and the data take over."""

from __future__ import annotations

import json
import math

import pytest

from lightning_to_energy.counting import StepProfile
from lightning_to_energy.counting.cost_model import AluOp, NumberFormat, Unit
from lightning_to_energy.counting.profile import PhaseTotals
from lightning_to_energy.counting.registry import OpCost
from lightning_to_energy.model import (
    calibrated_strength,
    energy_at,
    live_prior,
    predict_step,
)
from lightning_to_energy.model.features import FEATURES
from lightning_to_energy.model.physical_live import DATASHEET_STRENGTH
from lightning_to_energy.model.regression import OnlineEnergyModel, Prior

# the toy parameters the physical model's own tests work by hand
from test_physical import _params

F, MATRIX, VECTOR = NumberFormat, Unit.MATRIX, Unit.VECTOR
TF32, VFP32 = (MATRIX, F.TF32), (VECTOR, F.FP32)
PHASES = ("forward", "backward", "optimizer", "other")


def _profile() -> StepProfile:
    """Two calls of a TF32 matmul kernel (5e9 FMAs, 1e8 B) and three of an fp32 vector add
    (1e6 adds, 8e6 B): the step of tests/test_physical.py's forward model by hand."""
    matmul = OpCost({(AluOp.FMA, F.TF32, MATRIX): 5e9}, bytes_read=int(1e8), kernels=1)
    add = OpCost({(AluOp.ADD, F.FP32, VECTOR): 1e6}, bytes_read=int(8e6), kernels=1)
    phases = {p: PhaseTotals() for p in PHASES}
    phases["forward"] = PhaseTotals(kernels=2)
    phases["backward"] = PhaseTotals(kernels=3)
    return StepProfile(kernels=5, by_phase=phases, op_costs=((matmul, 2), (add, 3)))


# The step's features as the tracker sums them (TOs as a cost model would weigh them: any
# positive counts do, the mapping divides by them): no fp32 matrix work.
STEP = {
    "tos_matrix_full": 0.0,
    "tos_matrix_reduced": 1e12,
    "tos_vector": 3e8,
    "bytes": 2.24e8,  # 2 x 1e8 + 3 x 8e6 bytes read
    "kernels": 5.0,
}


def _dot(prior: Prior, x: dict[str, float]) -> float:
    return math.fsum(prior.coefficients.get(n, 0.0) * v for n, v in x.items())


def test_the_mapping_by_hand() -> None:
    mapped = live_prior(_params(), _profile(), STEP, FEATURES)
    c = mapped.prior.coefficients
    # device time 0.02227 s (tests/test_physical.py): busy 50 W x 0.02227 s = 1.1135 J.
    assert mapped.device_s == pytest.approx(0.02227)
    # FLOP work: TF32 2 calls x 5e9 FMA x 2 FLOP x 1e-12 J = 0.02 J; fp32 vector 3 x 1e6 x 2
    # x 1e-11 = 6e-5 J; 0.02006 J in all. Busy folded in proportion: x (1 + 1.1135 / 0.02006)
    # = x 56.50847; TF32: 0.02 x 56.50847 = 1.1301695 J over 1e12 TOs
    assert c["tos_matrix_reduced"] == pytest.approx(1.1301695e-12)
    # vector: 6e-5 x 56.50847 = 3.390508e-3 J over 3e8 TOs = 1.1301695e-11 J/TO
    assert c["tos_vector"] == pytest.approx(1.1301695e-11)
    # no fp32 matrix work, no TOs: 0; static power is base_w; bytes: 0.0224 J / 2.24e8 B
    assert c["tos_matrix_full"] == 0.0
    assert c["duration_s"] == 100.0
    assert c["bytes"] == pytest.approx(1e-10)
    assert c["kernels"] == 0.0
    assert mapped.unmapped == ()
    # Exact for a window of k steps of this signature at any measured time t >= 0.02227 s:
    # 4 steps of 0.03 s: 100 W x 0.12 s + 4 x (1.1301695 + 3.390508e-3 + 0.0224) = 12 +
    # 4 x 1.15596 = 16.62384 J = 4 x energy_at(0.03) = 4 x (3.0 + 0.04246 + 1.1135)
    window = {"duration_s": 0.12, **{n: 4 * v for n, v in STEP.items()}}
    assert _dot(mapped.prior, window) == pytest.approx(16.62384)
    assert _dot(mapped.prior, window) == pytest.approx(
        4 * energy_at(_profile(), _params(), 0.03).energy_j, rel=1e-12
    )


def test_the_ramp_and_every_measured_time_are_exact() -> None:
    params = _params(ramp_share=0.5)
    mapped = live_prior(params, _profile(), STEP, FEATURES)
    step = predict_step(_profile(), params)
    for t in (step.time_s, 0.05, 2.0):  # the modelled time, and slower steps
        x = {"duration_s": t, **STEP}
        assert _dot(mapped.prior, x) == pytest.approx(
            energy_at(_profile(), params, t).energy_j, rel=1e-12
        )
    # NB: a step measured faster than its device time is overpredicted by busy_w x (D - t):
    # 50 W x (0.02227 - 0.01) s = 0.6135 J
    fast = {"duration_s": 0.01, **STEP}
    assert _dot(mapped.prior, fast) - energy_at(_profile(), params, 0.01).energy_j == (
        pytest.approx(0.6135)
    )


def test_one_tos_feature_carries_all_the_work_and_others_are_noted() -> None:
    names = ("duration_s", "tos", "steps")
    step = {"tos": 1e12 + 3e8, "steps": 1.0}
    with pytest.raises(ValueError, match="'bytes' feature"):
        live_prior(_params(), _profile(), step, names)
    mapped = live_prior(_params(), _profile(), {**step, "bytes": 2.24e8}, (*names, "bytes"))
    # (0.02006 + 1.1135) J over 1.0003e12 TOs
    assert mapped.prior.coefficients["tos"] == pytest.approx(1.13356 / 1.0003e12)
    # "steps" has no term: 0, and said
    assert mapped.prior.coefficients["steps"] == 0.0
    assert mapped.unmapped == ("steps",)


def test_what_the_mapping_cannot_express_is_refused() -> None:
    with pytest.raises(ValueError, match="'duration_s'"):
        live_prior(_params(), _profile(), STEP, ("tos", "bytes"))
    with pytest.raises(ValueError, match="TO features that split"):
        live_prior(_params(), _profile(), STEP, ("duration_s", "tos_vector", "bytes"))
    no_tf32_tos = {**STEP, "tos_matrix_reduced": 0.0}
    with pytest.raises(ValueError, match="TOs on 'tos_matrix_reduced'"):
        live_prior(_params(), _profile(), no_tf32_tos, FEATURES)
    # params without the step's (unit, format): the model's KeyError, for the caller to warn
    bf16_only = (MATRIX, F.BF16)
    other = _params(
        peak_flop_s={bf16_only: 1e12},
        flop_half={bf16_only: 1e9},
        j_per_flop={bf16_only: 1e-12},
    )
    with pytest.raises(KeyError, match="matrix/tf32"):
        live_prior(other, _profile(), STEP, FEATURES)


def test_a_fitted_prior_is_weighed_by_its_held_out_interval() -> None:
    # (0.044 x 1.6449 / 0.2)^2 = 0.36187^2 = 0.13095 windows
    assert calibrated_strength(0.2) == pytest.approx(0.130953, rel=1e-4)
    # a tiny interval is capped at one window, a huge one floored at the datasheet strength
    assert calibrated_strength(0.01) == 1.0
    assert calibrated_strength(50.0) == DATASHEET_STRENGTH
    assert calibrated_strength(0.0) == 1.0  # no stated error: one window
    assert calibrated_strength(math.inf) == 1.0


def test_set_prior_before_the_first_window_and_not_after() -> None:
    model = OnlineEnergyModel(("duration_s", "tos"))
    assert model.predict({"duration_s": 1.0, "tos": 1e12}).source == "none"
    model.set_prior(Prior({"duration_s": 100.0, "tos": 1e-12}, strength=0.5))
    pred = model.predict({"duration_s": 1.0, "tos": 1e12})
    # 100 W x 1 s + 1e-12 J/TO x 1e12 TO = 101 J, from the prior
    assert (pred.source, pred.energy_j) == ("prior", pytest.approx(101.0))
    # the state carries it like a constructor's prior
    state = json.loads(json.dumps(model.state_dict()))
    assert state["prior"]["coefficients"] == {"duration_s": 100.0, "tos": 1e-12}
    assert state["prior_strength"] == 0.5
    back = OnlineEnergyModel.from_state_dict(state)
    assert back.prior == model.prior
    assert back.predict({"duration_s": 1.0, "tos": 1e12}).energy_j == pytest.approx(101.0)
    with pytest.raises(ValueError, match="unknown"):
        model.set_prior(Prior({"bytes": 1.0}))
    model.update({"duration_s": 1.0, "tos": 1e12}, 120.0)
    with pytest.raises(RuntimeError, match="before the first window"):
        model.set_prior(Prior({"duration_s": 1.0}))
    assert model.prior == Prior({"duration_s": 100.0, "tos": 1e-12}, strength=0.5)


def test_set_prior_refits_seeded_windows_toward_the_new_prior() -> None:
    # Seeded windows of one profile cannot split static from dynamic energy: the prior does.
    windows = [({"duration_s": 2.0, "tos": 2e12}, 300.0)] * 3
    model = OnlineEnergyModel(("duration_s", "tos"), prior=Prior({"duration_s": 150.0}))
    model.seed(windows)
    # the old prior puts it all on static power: 150 W x 2 s = 300 J
    assert model.coefficients["duration_s"] == pytest.approx(150.0, rel=1e-3)
    model.set_prior(Prior({"duration_s": 100.0, "tos": 5e-11}))
    # the new prior's split fits the windows exactly: 100 W x 2 s + 5e-11 x 2e12 = 300 J
    assert model.coefficients["duration_s"] == pytest.approx(100.0, rel=1e-3)
    assert model.coefficients["tos"] == pytest.approx(5e-11, rel=1e-3)
    assert model.n_windows == 3 and model.fitted


@pytest.mark.parametrize("strength", [DATASHEET_STRENGTH, calibrated_strength(0.2)])
def test_the_data_take_over_from_a_wrong_prior(strength: float) -> None:
    # The truth: 60 W static and 1e-11 J/TO; the prior says twice both.
    truth = {"duration_s": 60.0, "tos": 1e-11}
    window = {"duration_s": 2.0, "tos": 6e12}  # 120 J static + 60 J work = 180 J
    model = OnlineEnergyModel(("duration_s", "tos"))
    model.set_prior(Prior({n: 2 * c for n, c in truth.items()}, strength=strength))
    first = model.update(window, 180.0)
    # the first window comes from the prior: 2 x 180 = 360 J
    assert (first.source, first.energy_j) == ("prior", pytest.approx(360.0))
    for _ in range(9):
        model.update(window, 180.0)
    # Ten identical windows pin the prediction of the run's profile, and the prior pulls it by
    # lambda / (n p + lambda) of its error (ridge on unit-RMS columns, p = 2 features, n = 10):
    # 0.13095 / 20.13095 = 0.65 % with a fitted prior, 1e-3 / 20.001 = 0.005 % from datasheets.
    rel = model.predict(window).energy_j / 180.0 - 1.0  # type: ignore[operator]
    assert rel == pytest.approx(strength / (10 * 2 + strength), rel=1e-3)
    assert rel < 0.01


def test_no_energy_per_byte_maps_to_zero_not_a_rounding_below_it() -> None:
    params = _params(j_per_byte=0.0)
    mapped = live_prior(params, _profile(), STEP, FEATURES)
    # 0 J/B x 2.24e8 B: exactly 0 (not work minus FLOP work, which may round below 0)
    assert mapped.prior.coefficients["bytes"] == 0.0
    x = {"duration_s": 0.03, **STEP}
    # 100 W x 0.03 s + 0.02006 J + 1.1135 J = 4.13356 J
    assert _dot(mapped.prior, x) == pytest.approx(4.13356)
    assert _dot(mapped.prior, x) == pytest.approx(energy_at(_profile(), params, 0.03).energy_j)
