"""benchmarks/apriori_check.py without a calibration: the datasheet priors a run starts from."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from paths import SHARED_DATA


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "apriori_check", Path(__file__).resolve().parents[1] / "benchmarks" / "apriori_check.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.skipif(SHARED_DATA is None, reason="the shared data (../shared/data) is not here")
def test_datasheet_priors_predict_the_shared_steps_as_a_run_would_start() -> None:
    from lightning_to_energy.hardware.specs import find_hardware
    from lightning_to_energy.model.physical import predict_step
    from lightning_to_energy.model.physical_prior import prior_for
    from lightning_to_energy.study.shared_data import count_step, load_shared_data

    assert SHARED_DATA is not None
    result = _script().check(
        None, SHARED_DATA, only="^mlp-d2-s512-(relu|gelu)$", datasheet="h100-sxm"
    )
    assert result["configurations"] == 2 and result["same_gpu_kind"]
    assert result["calibration"] == "datasheet priors of h100-sxm"
    config = next(c for c in load_shared_data(SHARED_DATA).configs if c.id == "mlp-d2-s512-gelu")
    # the priors alone, nothing fitted: what prior_for gives the h100-sxm datasheet entry
    expected = predict_step(count_step(config), prior_for(find_hardware("h100-sxm")))
    row = next(r for r in result["per_config"] if r["id"] == config.id)
    assert row["pred_energy_j"] == pytest.approx(expected.energy_j)
    assert row["pred_time_s"] == pytest.approx(expected.time_s)
    times = [(r["pred_time_s"], r["time_s"]) for r in result["per_config"]]
    # precision = 100 x (1 - mean |pred / meas - 1|) over the two steps
    mape = sum(abs(p / m - 1) for p, m in times) / 2
    assert result["a_priori"]["time"]["precision_pct"] == pytest.approx(100 * (1 - mape))


def test_an_unknown_datasheet_key_is_refused_with_the_known_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _script().main(["--datasheet", "no-such-gpu", "--data", "missing.json"]) == 2
    err = capsys.readouterr().err
    assert "found 'no-such-gpu'" in err and "h100-sxm" in err


def test_a_calibration_and_a_datasheet_together_are_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["cal.json", "--datasheet", "h100-sxm"])
    assert exit_info.value.code == 2  # argparse: mutually exclusive sources


def test_missing_shared_data_says_where_it_looked_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # run from a worktree, the default ../shared/data is not there: not a bare "[Errno 2]"
    missing = tmp_path / "h100-training-steps.json"
    assert _script().main(["--datasheet", "h100-sxm", "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"shared data {str(missing)!r}: expected the shared H100 training steps" in err
    assert "found no file there" in err and "fix: pass its path" in err
    assert "relative to" not in err  # an absolute path needs no working directory
    assert "Errno" not in err
