"""Discovery: auto mode degrades with reasons, explicit mode fails loudly, DDP rank rules."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from fakes.fake_pynvml import FakeGpu, FakePynvml, make_fake_pynvml
from fakes.powercap import FakePowercap
from lightning_to_energy.sensors import (
    CpuTimeEstimateSensor,
    EnergyEstimateWarning,
    FakeSensor,
    SensorKind,
    SensorUnavailable,
    discover,
)
from lightning_to_energy.sensors import estimate as estimate_mod
from lightning_to_energy.sensors import nvml as nvml_mod

GPU_A = FakeGpu(uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000", pci_bus_id="00000000:17:00.0")
GPU_B = FakeGpu(uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000", pci_bus_id="00000000:18:00.0")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LTE_POWERCAP_ROOT", raising=False)
    monkeypatch.setattr(estimate_mod, "_announced", True)  # tests that check it reset it


def _nvml(*gpus: FakeGpu) -> FakePynvml:
    return make_fake_pynvml(list(gpus), clock=time.perf_counter)


def _domains(found: object) -> list[str]:
    return [s.domain for s in found.sensors]  # type: ignore[attr-defined]


def test_auto_finds_every_gpu_and_rapl_and_no_estimate(tmp_path: Path) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    found = discover(nvml=_nvml(GPU_A, GPU_B), powercap_root=tree.root, background=False)
    try:
        assert _domains(found) == ["gpu:0", "gpu:1", "cpu:package-0", "dram:0"]
        assert dict(found.skipped) == {}
        assert any("estimate is off" in note for note in found.notes)
    finally:
        found.close()


def test_auto_on_a_bare_machine_records_both_reasons_and_estimates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    # a GPU whose package is missing (without any GPU there is nothing to install)
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(estimate_mod, "_announced", False)
    with pytest.warns(EnergyEstimateWarning):
        found = discover(powercap_root=tmp_path / "absent")
    assert _domains(found) == ["cpu:estimate"]
    assert isinstance(found.sensors[0], CpuTimeEstimateSensor)
    assert "pip install 'lightning-to-energy[nvidia]'" in found.skipped["nvml"]
    assert found.skipped["rapl"].startswith("CPU energy not measured: the powercap root")
    assert any("ESTIMATE" in note for note in found.notes)


def test_auto_with_permission_denied_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    tree.deny("intel-rapl:0")
    tree.deny("intel-rapl:0:0")
    tree.enforce_permissions(monkeypatch)
    # A fake NVML, so the reason does not depend on whether nvidia-ml-py is installed here.
    found = discover(nvml=_nvml(GPU_A), devices=[], powercap_root=tree.root, background=False)
    assert _domains(found) == ["cpu:estimate"]
    assert found.skipped["rapl"].startswith("CPU energy not measured: permission denied")
    assert found.skipped["nvml"].startswith("GPU energy not measured: this process uses no CUDA")


def test_auto_never_raises_even_on_unexpected_errors(tmp_path: Path) -> None:
    broken = _nvml(GPU_A)

    def explode() -> None:
        raise RuntimeError("boom")

    broken.nvmlInit = explode  # type: ignore[attr-defined]
    found = discover(nvml=broken, devices=[0], powercap_root=tmp_path / "absent")
    assert "boom" in found.skipped["nvml"]


def test_auto_skips_a_mig_gpu_but_keeps_the_others(tmp_path: Path) -> None:
    mig_mode_gpu = FakeGpu(uuid=GPU_B.uuid, pci_bus_id=GPU_B.pci_bus_id, mig_mode=1)
    found = discover(
        nvml=_nvml(GPU_A, mig_mode_gpu), powercap_root=tmp_path / "absent", background=False
    )
    assert _domains(found) == ["gpu:0"]
    assert "MIG" in found.skipped["nvml gpu:1"]


def test_auto_measures_the_gpu_alone_where_the_cpu_could_only_be_estimated(
    tmp_path: Path,
) -> None:
    found = discover(nvml=_nvml(GPU_A), devices=[0], powercap_root=tmp_path / "absent")
    try:
        # no RAPL: the GPU's counter alone, not a total that is part estimate
        assert _domains(found) == ["gpu:0"]
        assert found.skipped["rapl"].startswith("CPU energy not measured: the powercap root")
        assert "sensors='nvml,estimate'" in found.skipped["estimate"]
    finally:
        found.close()
    # asked for by name, the estimate rides beside the GPU
    both = discover("nvml,estimate", nvml=_nvml(GPU_A), devices=[0], background=False)
    try:
        assert _domains(both) == ["gpu:0", "cpu:estimate"]
    finally:
        both.close()


def test_auto_notes_a_power_integration_fallback(tmp_path: Path) -> None:
    old_gpu = FakeGpu(has_counter=False)
    found = discover(nvml=_nvml(old_gpu), devices=[0], powercap_root=tmp_path / "absent")
    try:
        assert found.sensors[0].kind is SensorKind.POWER_INTEGRATION
        assert any("integrating power (power-integration)" in n for n in found.notes)
    finally:
        found.close()


def test_ddp_rank_reads_its_own_gpu_and_no_host_wide_sensor(tmp_path: Path) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    found = discover(
        nvml=_nvml(GPU_A, GPU_B),
        devices=[1],
        local_rank=1,
        powercap_root=tree.root,
        background=False,
    )
    try:
        # gpu:1 only; RAPL is left to local rank 0, which also means no estimate is needed
        assert _domains(found) == ["gpu:1"]
        assert "local rank 0 only" in found.skipped["rapl"]
        assert found.sensors[0].gpu_uuid == GPU_B.uuid  # type: ignore[attr-defined]
    finally:
        found.close()


def test_ddp_rank_without_rapl_estimates_its_own_process(tmp_path: Path) -> None:
    found = discover(devices=[], local_rank=3, powercap_root=tmp_path / "absent")
    assert _domains(found) == ["cpu:estimate"]


def test_explicit_backend_that_cannot_work_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    # a GPU whose package is missing (without any GPU there is nothing to install)
    monkeypatch.setattr(nvml_mod, "nvidia_gpu_present", lambda: True)
    with pytest.raises(SensorUnavailable) as info:
        discover(["nvml"])
    assert str(info.value).startswith("sensor backend 'nvml' was requested but cannot work")
    assert info.value.fix == "pip install 'lightning-to-energy[nvidia]'"
    with pytest.raises(
        SensorUnavailable, match=r"'rapl' was requested.*the powercap root .* does not exist"
    ):
        discover("rapl", powercap_root=tmp_path / "absent")
    with pytest.raises(SensorUnavailable, match="uses no CUDA device"):
        discover(["nvml"], nvml=_nvml(GPU_A), devices=[])


def test_explicit_failure_closes_what_it_already_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = FakePowercap.intel_server(tmp_path, sockets=1)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SensorUnavailable):
        discover("rapl,nvml", powercap_root=tree.root)  # RAPL opens with threads, then NVML fails
    assert [t.name for t in threading.enumerate() if t.name.startswith("lte-rapl-")] == []


def test_explicit_names_give_exactly_those_sensors(tmp_path: Path) -> None:
    tree = FakePowercap.amd(tmp_path)
    found = discover(["rapl", "fake", "estimate"], powercap_root=tree.root, background=False)
    assert _domains(found) == ["cpu:package-0", "fake:0", "cpu:estimate"]
    assert isinstance(found.sensors[1], FakeSensor)
    assert found.sensors[1].source == "fake: constant 100 W"
    # explicit RAPL on a non-zero local rank is skipped by design, not an error
    other = discover(["rapl"], powercap_root=tree.root, local_rank=1)
    assert other.sensors == () and "local rank 0 only" in other.skipped["rapl"]


def test_unknown_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="found \\['nvidia'\\]"):
        discover(["nvidia"])


def test_close_closes_every_sensor_even_when_one_raises() -> None:
    from lightning_to_energy.sensors.discover import Discovery

    closed: list[str] = []

    class Failing(FakeSensor):
        def close(self) -> None:
            closed.append(self.domain)
            raise RuntimeError("driver went away")

    class Tracked(FakeSensor):
        def close(self) -> None:
            closed.append(self.domain)

    found = Discovery(sensors=(Failing("gpu:0", power_w=1.0), Tracked("gpu:1", power_w=1.0)))
    with pytest.raises(RuntimeError, match="driver went away"):
        found.close()
    # the second sensor is closed although the first raised
    assert closed == ["gpu:0", "gpu:1"]


def test_the_fake_backend_has_the_power_asked_for() -> None:
    found = discover(["fake"], fake_power_w=250.0)
    assert found.sensors[0].source == "fake: constant 250 W"
