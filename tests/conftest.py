"""Shared test configuration: hardware tests are opt-in and skip with a reason."""

from __future__ import annotations

import pytest

_OPT_IN = {
    "gpu": ("--run-gpu", "needs an NVIDIA GPU with NVML; run with --run-gpu on such a machine"),
    "rapl": ("--run-rapl", "needs a readable /sys/class/powercap; run with --run-rapl as root"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    for flag, reason in _OPT_IN.values():
        parser.addoption(flag, action="store_true", default=False, help=reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, (flag, reason) in _OPT_IN.items():
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"opt-in hardware test: {reason}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep every test's calibration store out of the user's real cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
