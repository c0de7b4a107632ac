"""Scaling-law evaluation: loading run JSONs, the models, the splits, and the reports.

Synthetic runs with a known answer: energy generated from an exact law, so each model's error
can be reasoned out (or worked out by hand) before it is computed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from lightning_to_energy.reporting.plot import MissingExtraError
from lightning_to_energy.study import rendering as scaling_report
from lightning_to_energy.study.baselines import (
    MODELS,
    OURS_FEATURES,
    OursModel,
    fit_calibration_model,
)
from lightning_to_energy.study.evaluation import (
    ModelInfo,
    RunInfo,
    Score,
    StudyResults,
    evaluate,
    goals,
    verdict,
)
from lightning_to_energy.study.rendering import render_results, results_markdown, save_results
from lightning_to_energy.study.runs import RUN_FORMAT, StudyRun, load_runs

# The known law: E = 300 W * roofline_s + sum_k c_k * f_k (joules per step).
LAW: dict[str, float] = {
    "roofline_s": 300.0,
    "tos_matrix_full": 1e-12,
    "tos_matrix_tf32": 3e-12,
    "tos_matrix_low": 2e-12,
    "tos_vector": 4e-12,
    "bytes": 5e-11,
    "kernels": 2e-4,
}
# Typical per-step size of each feature by family: the families differ in mix (the mlp is
# fp32-matmul heavy, the cnn memory heavy, the transformer bf16-matmul and kernel heavy).
MIX: dict[str, dict[str, float]] = {
    "mlp": {
        "tos_matrix_full": 2e12,
        "tos_matrix_tf32": 0.4 * 2e11,
        "tos_matrix_low": 0.6 * 2e11,
        "tos_vector": 1e11,
        "bytes": 2e10,
        "kernels": 2000,
        "roofline_s": 0.004,
    },
    "cnn": {
        "tos_matrix_full": 5e11,
        "tos_matrix_tf32": 0.4 * 1e12,
        "tos_matrix_low": 0.6 * 1e12,
        "tos_vector": 2e11,
        "bytes": 4e10,
        "kernels": 4000,
        "roofline_s": 0.006,
    },
    "transformer": {
        "tos_matrix_full": 2e11,
        "tos_matrix_tf32": 0.4 * 2e12,
        "tos_matrix_low": 0.6 * 2e12,
        "tos_vector": 5e10,
        "bytes": 1e10,
        "kernels": 8000,
        "roofline_s": 0.01,
    },
}


def make_run(
    run_id: str,
    family: str,
    features: Mapping[str, float],
    energy_j: float,
    *,
    dtype: str = "fp32",
    dataset: str = "digits",
    hardware: str = "h100-sxm",
    duration_s: float = 0.01,
) -> StudyRun:
    return StudyRun(
        id=run_id,
        family=family,
        dataset=dataset,
        dtype=dtype,
        config={"id": run_id, "family": family},
        features=dict(features),
        energy_j=energy_j,
        duration_s=duration_s,
        hardware=hardware,
    )


def law_runs(per_family: int = 12, seed: int = 0) -> list[StudyRun]:
    """Runs whose energy follows LAW exactly; each feature varies independently (x0.3 to x3)."""
    rng = np.random.default_rng(seed)
    runs = []
    for family, sizes in MIX.items():
        for i in range(per_family):
            f = {k: v * rng.uniform(0.3, 3.0) for k, v in sizes.items()}
            f["tos_matrix_reduced"] = f["tos_matrix_tf32"] + f["tos_matrix_low"]
            f["tos"] = f["tos_matrix_full"] + f["tos_matrix_reduced"] + f["tos_vector"]
            f["flops"] = 2 * f["tos_matrix_full"] / 500 + 2 * f["tos_matrix_reduced"] / 80
            energy = sum(LAW[k] * f[k] for k in LAW)
            dtype = "bf16" if i % 3 == 0 else "fp32"
            # The measured step time is 1.2x the roofline estimate: same law, P / 1.2 W.
            runs.append(
                make_run(
                    f"{family}-{i}",
                    family,
                    f,
                    energy,
                    dtype=dtype,
                    duration_s=1.2 * f["roofline_s"],
                )
            )
    return runs


@pytest.fixture(scope="module")
def law_results() -> StudyResults:
    return evaluate(law_runs())


def ours_features(tos_full: float, bytes_: float = 0.0) -> dict[str, float]:
    """Per-step features of a run with only fp32 matrix TOs and (optionally) bytes."""
    return {
        "tos": tos_full,
        "flops": tos_full / 500,
        "tos_matrix_full": tos_full,
        "tos_matrix_reduced": 0.0,
        "tos_matrix_tf32": 0.0,
        "tos_matrix_low": 0.0,
        "tos_vector": 0.0,
        "bytes": bytes_,
        "kernels": 0.0,
        "roofline_s": 0.0,
    }


# ---- the known law ---------------------------------------------------------------------------


def test_ours_predicts_the_known_law_in_every_split(law_results: StudyResults) -> None:
    for split in ("within-family", "config", "family", "in-sample"):
        s = law_results.score("ours", split)
        # Exact data: only the model's weak ridge prior (1e-3 windows' worth) biases the fit.
        assert s.evaluable and s.n == 36, split
        assert s.precision_pct is not None and s.precision_pct > 99.9, (split, s)
        assert s.worst_rel_err is not None and s.worst_rel_err < 0.01, (split, s)


def test_calibration_recovers_the_law_coefficients_within_one_percent() -> None:
    runs = law_runs()
    model = fit_calibration_model(runs)
    assert model.feature_names == OURS_FEATURES
    for name, value in LAW.items():
        assert model.coefficients[name] == pytest.approx(value, rel=0.01), name
    # update() per run: the runs are the model's own windows (what a calibration stores).
    assert len(model.history_windows()) == len(runs)
    # The evaluation's one-shot seed() fit solves the same problem.
    fast = OursModel()
    fast.fit(runs)
    assert fast.energy_model is not None
    for name in OURS_FEATURES:
        assert fast.energy_model.coefficients[name] == pytest.approx(
            model.coefficients[name], rel=1e-6
        )


def test_measured_time_variant_absorbs_the_duration_scale() -> None:
    runs = law_runs()
    model = OursModel(measured_time=True)
    model.fit(runs)
    assert model.energy_model is not None
    # duration_s = 1.2 * roofline_s, so P = 300 W / 1.2 = 250 W.
    assert model.energy_model.coefficients["duration_s"] == pytest.approx(250.0, rel=0.01)


def test_tos_only_is_worse_across_families_when_energy_is_not_proportional(
    law_results: StudyResults,
) -> None:
    ours = law_results.score("ours", "family").precision_pct
    for name in ("tos-linear", "tos-loglog", "flops-linear", "flops-loglog"):
        s = law_results.score(name, "family")
        assert s.evaluable and s.precision_pct is not None and ours is not None
        # The families' joules per TO differ (memory, kernels, static power): one slope cannot
        # carry a family's rate over to another.
        assert s.precision_pct < ours - 10, name
    v = verdict(law_results, "family")
    # both op models fit the law (the measured time is 1.2 x the roofline): either may lead by
    # rounding; the best model that needs no measurement is ours
    assert v.best in {"ours", "ours-measured-time"} and v.n_common == 36
    assert v.best_predictive == "ours"


# ---- worked by hand --------------------------------------------------------------------------


def two_rate_runs() -> list[StudyRun]:
    """Family a: E = c * TOs. Family b: the same TOs cost twice (bytes add c * TOs)."""
    c = 2e-12
    runs = []
    for i, tos in enumerate((1e12, 2e12, 4e12, 8e12)):
        runs.append(make_run(f"a-{i}", "a", ours_features(tos), c * tos))
    for i, tos in enumerate((1.5e12, 3e12, 6e12, 1.2e13)):
        # bytes * 5e-11 J/B == c * tos  ->  bytes = c * tos / 5e-11
        bytes_ = c * tos / 5e-11
        runs.append(make_run(f"b-{i}", "b", ours_features(tos, bytes_), 2 * c * tos))
    return runs


def test_tos_linear_family_error_worked_by_hand() -> None:
    results = evaluate(two_rate_runs(), models=["tos-linear", "ours"], splits=["family"])
    s = results.score("tos-linear", "family")
    # Trained on a: E = c * TOs exactly (b = 0), so each b run is predicted at c * TOs against
    # 2c * TOs: relative error 1/2. Trained on b: E = 2c * TOs, so each a run gets 2c * TOs
    # against c * TOs: relative error 1. Mean over 4 + 4 runs: (4 * 0.5 + 4 * 1) / 8 = 0.75.
    assert s.n == 8
    assert s.precision_pct == pytest.approx(25.0, abs=1e-6)  # 100 * (1 - 0.75)
    # Sorted errors 0.5 x4, 1 x4: median (0.5 + 1) / 2 = 0.75; worst 1.
    assert s.median_rel_err == pytest.approx(0.75, abs=1e-8)
    assert s.worst_rel_err == pytest.approx(1.0, abs=1e-8)
    b0 = next(p for p in results.predictions_for("tos-linear", "family") if p.run_id == "b-0")
    # c * 1.5e12 = 2e-12 * 1.5e12 = 3 J predicted, 6 J measured.
    assert b0.predicted_j == pytest.approx(3.0, rel=1e-8)
    assert b0.measured_j == pytest.approx(6.0)


def test_tos_linear_is_exact_within_a_proportional_family() -> None:
    results = evaluate(two_rate_runs(), models=["tos-linear"], splits=["within-family"])
    s = results.score("tos-linear", "within-family")
    # Each family is exactly E = k * TOs: 3 training runs (>= 2 parameters + 1) recover k.
    assert s.n == 8
    assert s.precision_pct == pytest.approx(100.0, abs=1e-6)


def test_loglog_recovers_a_power_law_exactly() -> None:
    runs = []
    for family, tos_values in (("mlp", (1e10, 3e10, 1e11, 5e11)), ("cnn", (2e12, 7e12, 3e13))):
        for i, tos in enumerate(tos_values):
            # E = 3 J * (TOs / 1e9)^0.8  ->  log E = log 3 - 0.8 log 1e9 + 0.8 log TOs
            runs.append(
                make_run(f"{family}-{i}", family, ours_features(tos), 3.0 * (tos / 1e9) ** 0.8)
            )
    model = MODELS["tos-loglog"]()
    model.fit(runs)
    alpha, beta = model.coefficients  # type: ignore[attr-defined]
    assert beta == pytest.approx(0.8, rel=1e-9)
    assert alpha == pytest.approx(math.log(3.0) - 0.8 * math.log(1e9), rel=1e-9)
    results = evaluate(runs, models=["tos-loglog", "tos-linear"])
    for split in ("within-family", "config", "family"):
        s = results.score("tos-loglog", split)
        # A power law holds across families too: every held-out run is predicted exactly.
        assert s.precision_pct == pytest.approx(100.0, abs=1e-6), split
    # A straight line cannot follow the curvature (beta = 0.8 != 1) over three decades.
    lin = results.score("tos-linear", "family").precision_pct
    assert lin is not None and lin < 99.0


# ---- not evaluable ---------------------------------------------------------------------------


def test_too_few_training_runs_or_one_family_are_not_evaluable() -> None:
    runs = two_rate_runs()
    results = evaluate(runs, models=["tos-linear", "ours"])
    # within-family: 3 training runs per fold, ours has 7 parameters and needs 8.
    s = results.score("ours", "within-family")
    assert not s.evaluable and s.n == 0 and s.precision_pct is None
    assert s.reason is not None and "3 training run(s)" in s.reason and "at least 8" in s.reason
    # family: 4 training runs.
    s = results.score("ours", "family")
    assert not s.evaluable and s.reason is not None and "4 training run(s)" in s.reason
    # config: 7 training runs, one short of 8 as well.
    s = results.score("ours", "config")
    assert not s.evaluable and s.reason is not None and "7 training run(s)" in s.reason
    one_family = evaluate([r for r in runs if r.family == "a"], models=["tos-linear"])
    s = one_family.score("tos-linear", "family")
    assert not s.evaluable and s.reason is not None and "only one family (a)" in s.reason
    assert verdict(one_family, "family").best is None


def test_partly_fittable_split_notes_the_lost_runs_and_compares_on_common_runs() -> None:
    runs = law_runs(per_family=9)
    small = [r for r in runs if r.family != "cnn" or r.id in {"cnn-0", "cnn-1", "cnn-2"}]
    results = evaluate(small, models=["tos-linear", "ours"], splits=["within-family"])
    ours = results.score("ours", "within-family")
    # mlp and transformer: 8 training runs each, fitted (ours needs 7 + 1); cnn: 2, not fitted.
    assert ours.evaluable and ours.n == 18
    assert ours.note is not None and ours.note.startswith("3 of 21 runs not predicted")
    # tos-linear needs 3 training runs: the cnn folds (2) are lost for it too.
    assert results.score("tos-linear", "within-family").n == 18
    v = verdict(results, "within-family")
    assert v.n_common == 18


def test_a_run_without_roofline_makes_ours_not_evaluable_but_not_the_baselines() -> None:
    runs = law_runs(per_family=3)
    blind = dict(runs[0].features)
    del blind["roofline_s"]
    runs[0] = make_run(runs[0].id, runs[0].family, blind, runs[0].energy_j)
    results = evaluate(runs, models=["ours", "tos-linear"], splits=["config"], in_sample=False)
    s = results.score("ours", "config")
    assert not s.evaluable and s.reason == f"run {runs[0].id} lacks roofline_s"
    assert results.score("tos-linear", "config").evaluable
    assert results.splits == ("config",)


def test_evaluate_rejects_mixed_hardware_and_unknown_names() -> None:
    runs = law_runs(per_family=2)
    other = make_run("x", "mlp", runs[0].features, 1.0, hardware="a100")
    with pytest.raises(ValueError, match=r"one hardware.*\['a100', 'h100-sxm'\].*separately"):
        evaluate([*runs, other])
    with pytest.raises(ValueError, match="tos-cubic"):
        evaluate(runs, models=["tos-cubic"])
    with pytest.raises(ValueError, match="by-moon"):
        evaluate(runs, splits=["by-moon"])
    with pytest.raises(ValueError, match="at least one measured study run"):
        evaluate([])


# ---- load_runs -------------------------------------------------------------------------------


def run_json(run_id: str = "mlp-digits-w64-d2-relu-fp32", **override: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": RUN_FORMAT,
        "version": 1,
        "config": {
            "id": run_id,
            "family": "mlp",
            "dataset": "digits",
            "dtype": "fp32",
            "width": 64,
            "depth": 2,
        },
        "hardware": {"key": "h100-sxm", "name": "NVIDIA H100 80GB HBM3", "fingerprint": {}},
        "sensors": [{"domain": "nvml:0", "kind": "counter", "source": "nvml"}],
        "environment": {"torch": "2.13", "date": "2026-11-25T10:00:00Z"},
        "per_step": {
            "tos": 3e12,
            "flops": 1e10,
            "tos_matrix_full": 2e12,
            "tos_matrix_reduced": 5e11,
            "tos_matrix_tf32": 2e11,
            "tos_matrix_low": 3e11,
            "tos_vector": 5e11,
            "bytes": 4e9,
            "kernels": 120,
            "roofline_s": 0.002,
            "tos_by_class": {"fma": 2e12},
            "tos_by_format": {"fp32": 3e12},
        },
        "measured": {
            "steps": 120,
            "energy_j": 812.5,
            "duration_s": 6.0,
            "windows": 3,
            "kind": "counter",
            "energy_per_step_j": 812.5 / 120,
            "duration_per_step_s": 0.05,
        },
        "report": f"{run_id}.report.json",
    }
    for dotted, value in override.items():
        section, _, key = dotted.partition("__")
        if not key:
            data[section] = value
        elif value is _DELETE:
            del data[section][key]
        else:
            data[section][key] = value
    return data


_DELETE = object()


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_runs_reads_files_and_sorted_directories(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    d.mkdir()
    write(d / "b.run.json", run_json("b"))
    write(d / "a.run.json", run_json("a"))
    write(d / "notes.json", {"not": "a run"})  # not *.run.json: ignored
    single = write(tmp_path / "c.run.json", run_json("c", measured__duration_per_step_s=_DELETE))
    runs = load_runs([d, single, d / "a.run.json"])
    assert [r.id for r in runs] == ["a", "b", "c"]  # a.run.json given twice: read once
    a = runs[0]
    assert a.family == "mlp" and a.dataset == "digits" and a.dtype == "fp32"
    assert a.hardware == "h100-sxm" and a.path == d / "a.run.json"
    assert a.config["width"] == 64
    # 812.5 J / 120 steps
    assert a.energy_j == pytest.approx(812.5 / 120)
    assert a.features["roofline_s"] == 0.002 and "tos_by_class" not in a.features
    # No duration_per_step_s: 6.0 s / 120 steps = 0.05 s.
    assert runs[2].duration_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"version": 2}, r"field 'version': expected 1, found 2; fix: rerun the study"),
        ({"format": "other"}, r"field 'format': expected 'lightning-to-energy/study-run'"),
        (
            {"per_step__bytes": _DELETE},
            r"per_step\.bytes: expected a finite number >= 0, found '<missing>'; fix",
        ),
        ({"per_step__tos": -1}, r"per_step\.tos: expected a finite number >= 0, found -1"),
        ({"config__family": _DELETE}, r"config: field 'family': expected a non-empty string"),
        ({"measured": None}, r"field 'measured': expected a JSON object, found None"),
        (
            {"measured__energy_per_step_j": 0},
            r"energy_per_step_j: expected a finite number of joules > 0, found 0; fix",
        ),
        ({"measured__energy_per_step_j": -3.5}, r"found -3\.5"),
        (
            {"per_step__roofline_s": _DELETE},
            r"per_step\.roofline_s: expected a finite number >= 0 \(or null\), found '<missing>'",
        ),
        (
            # no per-step duration, and a step count of 0 to divide the total by
            {"measured__duration_per_step_s": _DELETE, "measured__steps": 0},
            r"duration_per_step_s: expected a finite number of seconds > 0",
        ),
    ],
)
def test_load_runs_errors_name_the_file_expected_found_and_fix(
    tmp_path: Path, override: dict[str, Any], pattern: str
) -> None:
    path = write(tmp_path / "bad.run.json", run_json(**override))
    with pytest.raises(ValueError, match=pattern) as info:
        load_runs([path])
    assert str(path) in str(info.value) and "fix:" in str(info.value)


def test_load_runs_skips_unmeasured_runs_with_a_warning(tmp_path: Path) -> None:
    good = write(tmp_path / "good.run.json", run_json("good"))
    null = write(tmp_path / "null.run.json", run_json("null", measured__energy_per_step_j=None))
    gone = write(tmp_path / "gone.run.json", run_json("gone", measured__energy_per_step_j=_DELETE))
    with pytest.warns(RuntimeWarning) as record:
        runs = load_runs([good, null, gone])
    assert [r.id for r in runs] == ["good"]
    messages = [str(w.message) for w in record]
    assert any(str(null) in m and "is null" in m for m in messages)
    assert any(str(gone) in m and "is missing" in m for m in messages)


def test_load_runs_null_roofline_is_kept_as_absent(tmp_path: Path) -> None:
    path = write(tmp_path / "r.run.json", run_json(per_step__roofline_s=None))
    (run,) = load_runs([path])
    assert "roofline_s" not in run.features
    assert MODELS["ours"]().unusable(run) == f"run {run.id} lacks roofline_s"


def test_load_runs_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="found nothing at that path"):
        load_runs([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"holding \*\.run\.json files, found none"):
        load_runs([empty])
    broken = tmp_path / "broken.run.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="unreadable JSON"):
        load_runs([broken])


# ---- results: JSON, CSV, PNG, rich, Markdown -------------------------------------------------


def test_results_json_round_trip_and_files(tmp_path: Path, law_results: StudyResults) -> None:
    paths = save_results(law_results, tmp_path / "out")
    assert set(paths) == {"json", "csv", "png"}  # matplotlib is in the dev environment
    back = StudyResults.from_dict(json.loads(paths["json"].read_text(encoding="utf-8")))
    assert back == law_results
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text(encoding="utf-8"))))
    # 6 models x 4 splits x 36 runs, every one evaluable on the law data.
    assert len(rows) == len(law_results.predictions) == 6 * 4 * 36
    first = law_results.predictions[0]
    assert float(rows[0]["predicted_j"]) == first.predicted_j
    assert float(rows[0]["rel_err"]) == pytest.approx(first.rel_err)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="scaling-results"):
        StudyResults.from_dict({"format": "x", "version": 1})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a key dropped from one score: named with its entry, beside the fields expected
        (
            lambda d: d["scores"][3].pop("n"),
            "scores[3]: expected an object with the fields of Score (model, split, evaluable, "
            "reason, n,",
        ),
        (lambda d: d["scores"][3].pop("n"), "found no 'n'; fix: regenerate it with "),
        # a key this version does not know
        (lambda d: d["runs"][0].update(colour="red"), "runs[0]: expected an object with the "),
        (lambda d: d["runs"][0].update(colour="red"), "found unknown 'colour'"),
        # a value of another type: the field, its type and the value found
        (
            lambda d: d["predictions"][2].update(predicted_j="12.5"),
            "predictions[2].predicted_j: expected float (JSON), found '12.5'",
        ),
        (
            lambda d: d["scores"][0].update(n=True),
            "scores[0].n: expected int (JSON), found True",
        ),
        # a whole section of another shape, or missing
        (lambda d: d.update(models={}), "field 'models': expected a list, each item an object, "),
        (lambda d: d.update(models={}), "found {}"),
        (lambda d: d.pop("runs"), "field 'runs': expected a list, each item an object, found no "),
        (lambda d: d["splits"].append(3), "splits[4]: expected a str, found 3"),
        (lambda d: d.pop("hardware"), "field 'hardware': expected a str (the hardware key), found"),
    ],
)
def test_a_malformed_results_file_names_the_field_what_was_expected_and_the_fix(
    law_results: StudyResults, edit: Any, message: str
) -> None:
    data = json.loads(json.dumps(law_results.to_dict()))
    edit(data)
    with pytest.raises(ValueError) as caught:
        StudyResults.from_dict(data)
    text = str(caught.value)
    assert text.startswith("scaling results: ") and message in text
    assert text.endswith("fix: regenerate it with `lightning-to-energy study eval STUDY_DIR` "
                         "from the run JSONs.")  # fmt: skip
    assert "\n" not in text  # one line


def test_a_results_file_that_is_no_object_says_so() -> None:
    with pytest.raises(ValueError, match=r"the file: expected a JSON object, found \[\]"):
        StudyResults.from_dict([])  # type: ignore[arg-type]


def test_save_results_without_matplotlib_warns_and_skips_the_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = evaluate(two_rate_runs(), models=["tos-linear"], splits=["family"])

    def missing() -> None:
        raise MissingExtraError("matplotlib is not installed")

    monkeypatch.setattr(scaling_report, "import_matplotlib", missing)
    with pytest.warns(RuntimeWarning, match=r"predicted_vs_measured\.png not written"):
        paths = save_results(results, tmp_path)
    assert set(paths) == {"json", "csv"}
    assert not (tmp_path / "predicted_vs_measured.png").exists()


def test_render_results_prints_rows_reasons_verdicts_and_goals() -> None:
    results = evaluate(two_rate_runs(), models=["tos-linear", "ours"])
    buf = io.StringIO()
    render_results(results, Console(file=buf, width=250, color_system=None))
    text = buf.getvalue()
    assert "tos-linear" in text and "not evaluable: 3 training run(s)" in text
    # tos-linear on family: 25.00 % (worked out in test_tos_linear_family_error_worked_by_hand)
    assert "25.00" in text
    for split in results.splits:
        assert verdict(results, split).text.split(":")[0] in text
    assert "goal ours ≥ 99 % within a family (within-family): n/a: not evaluated" in text


def hand_results(within_pct: float, family_pct: float) -> StudyResults:
    """A results object with given precisions for ours (and n = 4 runs of two families)."""

    def score(split: str, pct: float) -> Score:
        return Score("ours", split, True, None, 4, pct, 1 - pct / 100, 0.9, 0.01, 0.05)

    return StudyResults(
        hardware="h100-sxm",
        models=(ModelInfo("ours", "E = ...", False),),
        splits=("within-family", "family"),
        runs=(
            RunInfo("m1", "mlp", "digits", "fp32"),
            RunInfo("m2", "mlp", "digits", "bf16"),
            RunInfo("c1", "cnn", "cifar-synthetic", "bf16"),
            RunInfo("c2", "cnn", "cifar-synthetic", "bf16"),
        ),
        scores=(score("within-family", within_pct), score("family", family_pct)),
        predictions=(),
    )


def test_markdown_goal_verdicts_follow_the_figures() -> None:
    # 98.5 < 99: not met; 96.0 >= 95: met.
    md = results_markdown(hand_results(98.5, 96.0), "NVIDIA H100 80GB HBM3", "2026-11-25")
    assert md.startswith("## Energy scaling law on h100-sxm (2026-11-25)")
    assert "Machine: NVIDIA H100 80GB HBM3. Date: 2026-11-25." in md
    assert (
        "- ours ≥ 99 % within a family (split `within-family`): 98.50 % (n = 4): **not met**" in md
    )
    assert "- ours ≥ 95 % across families (split `family`): 96.00 % (n = 4): **met**" in md
    # Runs by family and dtype: cnn 2 bf16, mlp 1 bf16 + 1 fp32.
    assert "| family | bf16 | fp32 | total |" in md
    assert "| cnn | 2 | 0 | 2 |" in md and "| mlp | 1 | 1 | 2 |" in md
    assert "Data sets: cifar-synthetic (2), digits (2)." in md
    # 99.0 exactly meets the goal (>=); 94.99 misses.
    flipped = goals(hand_results(99.0, 94.99))
    assert [g.status for g in flipped] == ["met", "not met"]


def test_markdown_of_an_evaluation_reports_its_own_figures(law_results: StudyResults) -> None:
    md = results_markdown(law_results, "fake", "2026-01-01")
    for g in goals(law_results):
        assert g.value_pct is not None
        status = "met" if g.value_pct >= g.target_pct else "not met"
        assert f"{g.value_pct:.2f} % (n = 36): **{status}**" in md
    s = law_results.score("tos-linear", "family")
    assert f"| tos-linear | family | 36 | {s.precision_pct:.2f} |" in md
    assert "| in-sample |" in md and "a reference, not a prediction" in md


def test_study_run_rejects_a_non_positive_energy() -> None:
    with pytest.raises(
        ValueError, match=r"'x': energy_j: expected a finite number > 0.*found 0\.0"
    ):
        make_run("x", "mlp", ours_features(1e12), 0.0)


def test_estimated_energy_is_flagged_in_the_markdown_and_the_table(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    d.mkdir()
    # Two runs measured by a counter, one by the CPU-time estimate.
    write(d / "a.run.json", run_json("a"))
    write(d / "b.run.json", run_json("b"))
    write(d / "c.run.json", run_json("c", measured__kind="estimate"))
    runs = load_runs([d])
    assert [r.kind for r in runs] == ["counter", "counter", "estimate"]
    results = evaluate(runs, models=["tos-linear"], splits=["config"])
    assert results.runs[2].kind == "estimate"
    md = results_markdown(results, "a VM", "2026-11-25")
    assert "Energy: 2 runs counter, 1 runs estimate" in md
    assert "**Not a measurement of energy (1 estimate of 3 runs)" in md
    console = Console(record=True, width=200)
    render_results(results, console)
    assert "Not a measurement of energy" in console.export_text()
    # Counter-only runs carry no such warning.
    counted = evaluate(runs[:2], models=["tos-linear"], splits=["config"])
    assert "Not a measurement" not in results_markdown(counted, "x", "2026-11-25")


def test_markdown_names_sensor_kinds_as_the_run_jsons_spell_them(tmp_path: Path) -> None:
    from lightning_to_energy.sensors.base import SensorKind

    d = tmp_path / "runs"
    d.mkdir()
    write(d / "a.run.json", run_json("a", measured__kind=SensorKind.POWER_INTEGRATION.value))
    results = evaluate(load_runs([d]), models=["tos-linear"], splits=["config"])
    md = results_markdown(results, "a GPU", "2026-11-25")
    # the count and the legend use the same word: "power-integration"
    assert "Energy: 1 runs power-integration (" in md
    assert "power-integration = integrated instant power" in md


def test_design_effects_compare_runs_that_differ_in_one_choice_only() -> None:
    from lightning_to_energy.study.evaluation import design_effects

    act = {"relu": 1.0, "gelu": 1.06, "tanh": 1.04}
    runs = []
    for width in (256, 1024):
        for a, factor in act.items():
            for dtype, d_factor in (("fp32", 1.0), ("bf16", 0.5)):
                cfg: dict[str, Any] = {
                    "id": f"{width}-{a}-{dtype}",
                    "family": "mlp",
                    "width": width,
                }
                cfg.update(activation=a, dtype=dtype, depth=2)
                # energy per step: 1 J per 256 of width, times the activation and dtype factors
                energy = width / 256 * factor * d_factor
                runs.append(make_run(cfg["id"], "mlp", {}, energy, dtype=dtype))
                runs[-1] = StudyRun(**{**vars(runs[-1]), "config": cfg})
    effects = {(e.knob, e.value, e.reference): e for e in design_effects(runs)}
    # gelu vs relu: 1.06 in each of the 4 (width, dtype) groups
    gelu = effects[("activation", "gelu", "relu")]
    assert (gelu.pairs, gelu.ratio, gelu.ratio_min, gelu.ratio_max) == pytest.approx(
        (4, 1.06, 1.06, 1.06)
    )
    assert effects[("activation", "tanh", "relu")].ratio == pytest.approx(1.04)
    # bf16 vs fp32: 0.5 in each of the 6 (width, activation) groups
    bf16 = effects[("dtype", "bf16", "fp32")]
    assert (bf16.pairs, bf16.ratio) == (6, pytest.approx(0.5))
    # width 1024 vs the smaller 256: 4x in each of the 6 (activation, dtype) groups
    wide = effects[("width", "1024", "256")]
    assert (wide.pairs, wide.ratio) == (6, pytest.approx(4.0))
    # depth never varies: no depth row
    assert not any(k == "depth" for k, _, _ in effects)
    results = evaluate(runs, models=["tos-linear"], splits=["config"], in_sample=False)
    assert results.effects and StudyResults.from_dict(results.to_dict()) == results
    assert "| activation gelu | relu | 4 | 1.060 | 1.060 to 1.060 |" in results_markdown(
        results, "x", "2026-11-25"
    )


def test_score_pairs_by_hand() -> None:
    from lightning_to_energy.model.scoring import score_pairs

    figures = score_pairs([(110.0, 100.0), (180.0, 200.0), (300.0, 300.0), (500.0, 400.0)])
    # relative errors |p - m| / m: 10/100 = 0.1, 20/200 = 0.1, 0, 100/400 = 0.25
    # mean (0.1 + 0.1 + 0 + 0.25) / 4 = 0.1125 -> precision 100 x (1 - 0.1125) = 88.75 %
    assert figures["n"] == 4
    assert figures["mape"] == pytest.approx(0.1125)
    assert figures["precision_pct"] == pytest.approx(88.75)
    # sorted 0, 0.1, 0.1, 0.25: median (0.1 + 0.1) / 2 = 0.1; worst 0.25
    assert figures["median_rel_err"] == pytest.approx(0.1)
    assert figures["worst_rel_err"] == pytest.approx(0.25)
    # mean measured 1000 / 4 = 250; SS_tot = 150^2 + 50^2 + 50^2 + 150^2 = 50000;
    # SS_res = 10^2 + 20^2 + 0 + 100^2 = 10500; R^2 = 1 - 10500 / 50000 = 0.79
    assert figures["r2"] == pytest.approx(0.79)
    with pytest.raises(ValueError, match="at least one"):
        score_pairs([])
    with pytest.raises(ValueError, match="measurements > 0"):
        score_pairs([(1.0, 0.0)])


def test_linear_model_minimises_the_relative_not_the_absolute_error() -> None:
    runs = [
        make_run(f"r{i}", "mlp", ours_features(x), e)
        for i, (x, e) in enumerate(((1e12, 1.0), (2e12, 4.0), (4e12, 4.0)))
    ]
    model = MODELS["tos-linear"]()
    model.fit(runs)
    # Weights 1 / E^2 = (1, 1/16, 1/16), x in units of 1e12: sum w x^2 = 1 + 4/16 + 16/16 =
    # 2.25, sum w x E = 1 + 8/16 + 16/16 = 2.5. The unconstrained optimum has b < 0, so b = 0
    # and a = 2.5 / 2.25 = 1.1111 J per 1e12 TOs. (Unweighted least squares would give
    # a = 0.857, b = 1.0.)
    a, b = model.coefficients  # type: ignore[attr-defined]
    assert a == pytest.approx(2.5 / 2.25 * 1e-12, rel=1e-6)
    assert b == pytest.approx(0.0, abs=1e-9)


def test_loglog_needs_distinct_positive_features() -> None:
    from lightning_to_energy.study.baselines import NotFittableError

    model = MODELS["tos-loglog"]()
    zero = make_run("z", "mlp", ours_features(0.0), 1.0)
    assert model.unusable(zero) == "run z has tos = 0 (log undefined)"
    same = [make_run(f"s{i}", "mlp", ours_features(1e12), 1.0 + i) for i in range(3)]
    with pytest.raises(NotFittableError, match="every training run has the same tos"):
        model.fit(same)


def test_a_run_reads_steps_as_one_and_duration_as_measured() -> None:
    run = make_run("r", "mlp", ours_features(1e12), 2.0, duration_s=0.25)
    # every figure of a run is per step: the "steps" feature of one step is 1
    assert (run.feature("steps"), run.feature("duration_s")) == (1.0, 0.25)


def test_verdict_compares_models_on_the_runs_all_of_them_predicted() -> None:
    runs = law_runs(per_family=9)
    four_cnn = [r for r in runs if r.family != "cnn" or r.id in {f"cnn-{i}" for i in range(4)}]
    results = evaluate(four_cnn, models=["tos-linear", "ours"], splits=["within-family"])
    # cnn folds: 3 training runs fit tos-linear (needs 3) but not ours (needs 8)
    assert results.score("tos-linear", "within-family").n == 9 + 9 + 4
    assert results.score("ours", "within-family").n == 9 + 9
    v = verdict(results, "within-family")
    assert v.n_common == 18
    common = {p.run_id for p in results.predictions_for("ours", "within-family")}
    # each model's figure in the verdict is over the 18 common runs (tos-linear's own 22
    # include the 4 cnn runs, where its fit is exact and would flatter it)
    pct = {
        m: 100 * (1 - float(np.mean([p.rel_err for p in rows if p.run_id in common])))
        for m in ("tos-linear", "ours")
        if (rows := results.predictions_for(m, "within-family"))
    }
    best = max(pct, key=lambda m: pct[m])
    assert (v.best, v.best_pct) == (best, pytest.approx(pct[best]))


def test_verdict_names_the_best_model_needing_no_measurement() -> None:
    from lightning_to_energy.study.evaluation import PredictionRow

    def row(model: str, predicted: float) -> PredictionRow:
        return PredictionRow(model, "config", "r1", "mlp", "digits", "fp32", predicted, 100.0)

    results = StudyResults(
        hardware="h100-sxm",
        models=(ModelInfo("measured", "E = ...", True), ModelInfo("predictive", "E = ...", False)),
        splits=("config",),
        runs=(RunInfo("r1", "mlp", "digits", "fp32"),),
        scores=(
            Score("measured", "config", True, None, 1, 100.0, 0.0, None, 0.0, 0.0),
            Score("predictive", "config", True, None, 1, 90.0, 0.1, None, 0.1, 0.1),
        ),
        predictions=(row("measured", 100.0), row("predictive", 110.0)),
    )
    v = verdict(results, "config")
    # measured: |100 - 100| / 100 = 0 -> 100 %; predictive: |110 - 100| / 100 = 0.1 -> 90 %
    assert (v.best, v.best_pct) == ("measured", pytest.approx(100.0))
    assert (v.best_predictive, v.best_predictive_pct) == ("predictive", pytest.approx(90.0))


def test_design_effect_ratio_range_spans_the_groups() -> None:
    from lightning_to_energy.study.evaluation import design_effects

    runs = []
    for depth, gelu_factor in ((2, 1.02), (4, 1.06)):
        for act, factor in (("relu", 1.0), ("gelu", gelu_factor)):
            run_id = f"d{depth}-{act}"
            cfg = {"id": run_id, "family": "mlp", "depth": depth, "activation": act}
            run = make_run(run_id, "mlp", {}, depth * factor)
            runs.append(StudyRun(**{**vars(run), "config": cfg}))
    (gelu,) = [e for e in design_effects(runs) if e.knob == "activation"]
    # gelu / relu: 2.04 / 2 = 1.02 at depth 2, 4.24 / 4 = 1.06 at depth 4; mean 1.04
    assert (gelu.pairs, gelu.ratio, gelu.ratio_min, gelu.ratio_max) == pytest.approx(
        (2, 1.04, 1.02, 1.06)
    )


def test_a_family_fold_that_cannot_be_fitted_counts_all_its_runs_as_lost() -> None:
    runs = two_rate_runs()[:5]  # family a: 4 runs; family b: 1 run
    results = evaluate(runs, models=["tos-linear"], splits=["family"], in_sample=False)
    s = results.score("tos-linear", "family")
    # holding a out leaves 1 training run (tos-linear needs 3): a's 4 runs are not predicted;
    # holding b out trains on a's 4 and predicts b's 1
    assert s.evaluable and s.n == 1
    assert s.note is not None and s.note.startswith(
        "4 of 5 runs not predicted (model not fittable on 1 fold(s), e.g. family a:"
    )
