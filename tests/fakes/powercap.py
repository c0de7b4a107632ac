"""A fake Linux powercap tree laid out like the kernel's.

The kernel keeps the zones under ``/sys/devices/virtual/powercap/<type>/<zone>/<subzone>`` and
lists every zone, subzones included, as a symlink in ``/sys/class/powercap``. Each zone holds
``name``, ``energy_uj`` and ``max_energy_range_uj``, and a ``subsystem`` link back to the class
directory. :class:`FakePowercap` builds the same shape under a temporary directory; pass
:attr:`FakePowercap.root` as the powercap root (or set ``LTE_POWERCAP_ROOT`` to it).

Tests usually run as root here, and root ignores file modes, so :meth:`FakePowercap.deny` also
needs :meth:`FakePowercap.enforce_permissions` to make reads fail as they would for a user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_to_energy.sensors import rapl

#: A typical Intel package range: 2^32 energy units of 61.035 µJ.
INTEL_MAX_UJ = 262_143_328_850


class FakePowercap:
    """Build and drive a fake powercap tree.

    Args:
        base: an empty directory to build in (e.g. pytest's ``tmp_path``).
    """

    def __init__(self, base: Path) -> None:
        self.root = base / "class" / "powercap"
        self._devices = base / "devices" / "virtual" / "powercap"
        self.root.mkdir(parents=True)
        self._devices.mkdir(parents=True)
        self._zones: dict[str, Path] = {}
        self._denied: set[Path] = set()

    def add_zone(
        self,
        label: str,
        name: str,
        *,
        energy_uj: int = 0,
        max_energy_range_uj: int = INTEL_MAX_UJ,
        max_power_uw: int | None = None,
    ) -> Path:
        """Add a zone such as ``"intel-rapl:0"`` or ``"intel-rapl:0:1"``; its parent must exist.

        ``max_power_uw`` writes the zone's stated maximum power (``constraint_0_max_power_uw``).

        Returns:
            The zone's real directory.
        """
        control, _, indices = label.partition(":")
        parent_label = label.rsplit(":", 1)[0]
        if ":" in indices:
            directory = self._zones[parent_label] / label
        else:
            (self._devices / control).mkdir(exist_ok=True)
            directory = self._devices / control / label
        directory.mkdir()
        (directory / "name").write_text(f"{name}\n")
        (directory / "energy_uj").write_text(f"{energy_uj}\n")
        (directory / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        if max_power_uw is not None:
            (directory / "constraint_0_max_power_uw").write_text(f"{max_power_uw}\n")
        (directory / "subsystem").symlink_to(os.path.relpath(self.root, directory))
        (self.root / label).symlink_to(os.path.relpath(directory, self.root))
        self._zones[label] = directory
        return directory

    def set_energy(self, label: str, energy_uj: int) -> None:
        """Write a zone's raw counter atomically: a background reader never sees half of it."""
        target = self._zones[label] / "energy_uj"
        scratch = target.with_name("energy_uj.new")
        scratch.write_text(f"{energy_uj}\n")
        os.replace(scratch, target)

    def deny(self, label: str) -> None:
        """Make a zone's ``energy_uj`` unreadable (mode 000; see enforce_permissions)."""
        path = self._zones[label] / "energy_uj"
        path.chmod(0)
        self._denied.add(path.resolve())

    def enforce_permissions(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make denied files raise PermissionError even for root, as they do for a user."""
        real_read = rapl._read_file

        def read(path: Path) -> str:
            if Path(path).resolve() in self._denied:
                raise PermissionError(13, "Permission denied", str(path))
            return real_read(path)

        monkeypatch.setattr(rapl, "_read_file", read)

    # --- typical machines -------------------------------------------------------------------

    @classmethod
    def intel_server(cls, base: Path, sockets: int = 2) -> FakePowercap:
        """Xeon-like: per socket a package zone with a dram subzone (and no core subzone)."""
        tree = cls(base)
        for s in range(sockets):
            tree.add_zone(f"intel-rapl:{s}", f"package-{s}")
            tree.add_zone(f"intel-rapl:{s}:0", "dram")
        return tree

    @classmethod
    def intel_client(cls, base: Path) -> FakePowercap:
        """Laptop-like: package with core/uncore subzones, a psys zone, and MMIO duplicates."""
        tree = cls(base)
        tree.add_zone("intel-rapl:0", "package-0")
        tree.add_zone("intel-rapl:0:0", "core")
        tree.add_zone("intel-rapl:0:1", "uncore")
        tree.add_zone("intel-rapl:1", "psys")
        tree.add_zone("intel-rapl-mmio:0", "package-0")
        return tree

    @classmethod
    def amd(cls, base: Path, sockets: int = 1) -> FakePowercap:
        """AMD Zen (Linux 5.8+): intel-rapl package zones with a core subzone, no dram."""
        tree = cls(base)
        for s in range(sockets):
            tree.add_zone(f"intel-rapl:{s}", f"package-{s}", max_energy_range_uj=65_532_610_987)
            tree.add_zone(f"intel-rapl:{s}:0", "core", max_energy_range_uj=65_532_610_987)
        return tree
