"""Our warning category prints as one clean line; every other category keeps its look."""

from __future__ import annotations

import warnings

import pytest

from lightning_to_energy import notices
from lightning_to_energy.calibration import CalibrationWarning
from lightning_to_energy.notices import EnergyWarning
from lightning_to_energy.sensors.estimate import EnergyEstimateWarning


@pytest.fixture(autouse=True)
def _restore_formatwarning() -> object:
    before = warnings.formatwarning
    yield
    warnings.formatwarning = before


def _shown(message: str, category: type[Warning]) -> str:
    """What Python's default showwarning prints for this warning (after install_format): it
    formats through ``warnings.formatwarning`` once that is replaced (pytest replaces
    showwarning itself while a test runs, so the formatter is called directly)."""
    notices.install_format()
    return warnings.formatwarning(message, category, "/somewhere/deep/module.py", 203)


def test_our_warnings_print_as_one_line_without_a_source_path() -> None:
    # The prefix is added once, whether or not the message carries it; newlines fold.
    assert _shown("CPU energy is an ESTIMATE:\n  see `sensors`", EnergyEstimateWarning) == (
        "lightning-to-energy: CPU energy is an ESTIMATE: see `sensors`\n"
    )
    assert _shown("lightning-to-energy: sensor gpu:0 failed", EnergyWarning) == (
        "lightning-to-energy: sensor gpu:0 failed\n"
    )
    assert _shown("calibration file x cannot be used", CalibrationWarning) == (
        "lightning-to-energy: calibration file x cannot be used\n"
    )


def test_other_categories_keep_their_path_and_the_filters_are_untouched() -> None:
    filters = list(warnings.filters)
    shown = _shown("something else", UserWarning)
    assert shown.startswith("/somewhere/deep/module.py:203: UserWarning: something else")
    notices.install_format()  # idempotent: wraps once
    assert _shown("x", EnergyWarning) == "lightning-to-energy: x\n"
    assert warnings.filters == filters


def test_warn_emits_our_category_and_stays_a_runtime_warning() -> None:
    with pytest.warns(RuntimeWarning, match="disk full") as caught:
        notices.warn("lightning-to-energy: disk full")
    assert caught[0].category is EnergyWarning
    # Filters written for the old RuntimeWarning, and for the calibration's UserWarning, still
    # catch them.
    assert issubclass(CalibrationWarning, UserWarning)
    assert issubclass(CalibrationWarning, EnergyWarning)


def test_a_real_process_prints_exactly_one_clean_line(tmp_path: object) -> None:
    import subprocess
    import sys

    code = (
        "import lightning.pytorch\n"  # Lightning installs its own formatwarning on import
        "from lightning_to_energy import notices\n"
        "notices.warn('CPU energy is an ESTIMATE')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr == "lightning-to-energy: CPU energy is an ESTIMATE\n"
