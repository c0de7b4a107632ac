"""CPU package and DRAM energy from RAPL, through the Linux powercap tree (Intel and AMD).

The tree (``/sys/class/powercap``) holds zones ``intel-rapl:N`` (one per package, named
``package-N``; also used for AMD Zen since Linux 5.8) with nested subzones ``intel-rapl:N:M``
(``core``, ``uncore``, ``dram``), sometimes a ``psys`` platform zone, and on recent Intel
client parts ``intel-rapl-mmio:N`` zones that duplicate the package zones. Zones nest
(psys > package > core/uncore), so only package and dram zones are summed; duplicates are
dropped.

``energy_uj`` counts microjoules and wraps at ``max_energy_range_uj`` (after about a minute to
tens of minutes under load). Differences are taken modulo that range, and a low-rate background
thread reads each counter well inside its wrap period so that a long pause of the training
thread cannot hide a wrap. A counter that went back is a wrap only if the wrapped difference is
a power the zone can draw in the time between the reads; otherwise it was reset. Reads so far
apart that the zone could have drawn a whole range between them (a stopped process) may hide
wraps, whose number cannot be known. Both are reported (:class:`ReadingAnomaly`), never
guessed. Since Linux 5.10 ``energy_uj`` is readable by root only
(CVE-2020-8694); the fix is in ``docs/sensors.md``.

The tree's root can be moved for containers and tests: argument ``root=``, else the environment
variable ``LTE_POWERCAP_ROOT``, else ``/sys/class/powercap``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning_to_energy.sensors._background import Sampler
from lightning_to_energy.sensors.base import (
    ANOMALY_MULTI_WRAP,
    ANOMALY_RESET,
    ReadingAnomaly,
    SensorError,
    SensorKind,
    SensorUnavailable,
    power_ceiling_w,
)

__all__ = [
    "DEFAULT_MAX_ZONE_POWER_W",
    "DEFAULT_POWERCAP_ROOT",
    "MAX_POLL_PERIOD_S",
    "PEEK_MAX_AGE_S",
    "PERMISSION_FIX",
    "PERMISSION_REASON",
    "POWERCAP_ROOT_ENV",
    "RaplSensor",
    "RaplZone",
    "RaplZones",
    "find_rapl_zones",
    "powercap_root",
    "rapl_sensors",
]

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
#: Environment variable that moves the powercap root (containers mounting sysfs elsewhere, tests).
POWERCAP_ROOT_ENV = "LTE_POWERCAP_ROOT"

#: The most power one zone is assumed able to draw, used only to time the background reads.
#: NB: generous on purpose (server packages draw up to about 400 W); a higher figure only means
#: more frequent reads.
DEFAULT_MAX_ZONE_POWER_W = 1000.0
#: Upper bound on the background read period, seconds.
MAX_POLL_PERIOD_S = 10.0
#: How long a reading serves :meth:`RaplSensor.peek_j` before the file is read again. A live
#: display peeks on every training step, and one ``energy_uj`` read costs tens of µs (a sysfs
#: read plus an inter-processor call to read the MSR on a CPU of that package), per zone.
PEEK_MAX_AGE_S = 0.1

PERMISSION_REASON = (
    "CPU energy not measured: permission denied (energy_uj is root-only since Linux 5.10, "
    "CVE-2020-8694)."
)
PERMISSION_FIX = (
    "let your user read the counters: until the next reboot, `sudo chmod a+r "
    "/sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj`; "
    "for good, a udev rule giving a group read access (docs/sensors.md, 'RAPL permissions')."
)

# Zone directory names: a control type and one or more indices.
_ZONE_RE = re.compile(r"^(intel-rapl|amd-rapl|intel-rapl-mmio)((?::\d+)+)$")
# When two interfaces expose the same domain, the first in this order is kept.
_PREFIX_ORDER = ("intel-rapl", "amd-rapl", "intel-rapl-mmio")
# NB: Intel documents an update interval of about 1 ms for the RAPL energy status registers.
_RAPL_UPDATE_PERIOD_S = 0.001
_RAPL_MIN_WINDOW_S = 0.1


def _read_file(path: Path) -> str:
    """Read one sysfs attribute; the single place RAPL touches the filesystem's files."""
    return path.read_text()


def _read_int(path: Path) -> int:
    text = _read_file(path).strip()
    try:
        return int(text)
    except ValueError as exc:
        raise SensorError(f"{path}: expected an integer; found {text!r}.") from exc


def powercap_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The powercap root to use: ``root``, else ``$LTE_POWERCAP_ROOT``, else the system one."""
    if root is not None:
        return Path(root)
    env = os.environ.get(POWERCAP_ROOT_ENV)
    return Path(env) if env else DEFAULT_POWERCAP_ROOT


@dataclass(frozen=True)
class RaplZone:
    """One RAPL zone chosen for measurement.

    Attributes:
        domain: ``"cpu:package-N"`` or ``"dram:N"``.
        name: the zone's own name (its ``name`` file), e.g. ``"package-0"`` or ``"dram"``.
        path: the zone's directory.
        max_energy_range_uj: the value at which ``energy_uj`` wraps, in microjoules.
        max_power_w: the largest power the zone states (its ``constraint_*_max_power_uw``
            and ``constraint_*_power_limit_uw`` files); None where it states none.
    """

    domain: str
    name: str
    path: Path
    max_energy_range_uj: int
    max_power_w: float | None = None


def _stated_max_power_w(zone: Path) -> float | None:
    """The largest positive power the zone states, in W: over its ``constraint_*_max_power_uw``
    and ``constraint_*_power_limit_uw`` files, None without any.

    NB: the largest of them, because a package may run at its short-term limit (PL2, often
    about twice its long-term one) for tens of seconds: a ceiling below that would reject true
    readings, while garbage and resets are off by orders of magnitude.
    """
    values: list[int] = []
    for pattern in ("constraint_*_max_power_uw", "constraint_*_power_limit_uw"):
        for path in sorted(zone.glob(pattern)):
            try:
                values.append(_read_int(path))
            except (OSError, SensorError):  # a bound on readings, not needed to measure
                continue
    positive = [v for v in values if v > 0]
    return max(positive) / 1e6 if positive else None  # µW -> W


@dataclass(frozen=True)
class RaplZones:
    """The outcome of scanning a powercap tree.

    Attributes:
        zones: the package and dram zones that can be read, one per domain.
        notes: what was left out and why (nested zones, duplicates, missing dram).
    """

    zones: tuple[RaplZone, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Candidate:
    prefix: str
    indices: tuple[int, ...]
    path: Path
    name: str

    @property
    def label(self) -> str:
        return self.prefix + "".join(f":{i}" for i in self.indices)


def _scan(root: Path) -> list[_Candidate]:
    """Every zone directory under ``root``, nested ones included, each real directory once."""
    found: list[_Candidate] = []
    seen: set[Path] = set()

    def visit(directory: Path) -> None:
        for child in sorted(directory.iterdir()):
            match = _ZONE_RE.match(child.name)
            if match is None or not child.is_dir():
                continue
            # The kernel lists subzones both nested and as top-level links: keep one of each.
            real = child.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                name = _read_file(child / "name").strip()
            except OSError:
                name = ""
            indices = tuple(int(i) for i in match.group(2).split(":")[1:])
            found.append(_Candidate(match.group(1), indices, child, name))
            visit(child)

    visit(root)
    return found


def _classify(
    candidates: list[_Candidate],
) -> tuple[list[tuple[str, _Candidate]], list[str]]:
    """Choose package and dram zones, one per domain; say what was left out."""
    names = {(c.prefix, c.indices): c.name for c in candidates}
    chosen: dict[str, _Candidate] = {}
    notes: list[str] = []
    nested: list[str] = []
    ordered = sorted(candidates, key=lambda c: (_PREFIX_ORDER.index(c.prefix), c.indices))
    for cand in ordered:
        domain: str | None = None
        if cand.name.startswith("package-"):
            domain = "cpu:" + cand.name
        elif cand.name == "dram":
            parent = names.get((cand.prefix, cand.indices[:1]), "")
            if len(cand.indices) > 1 and parent.startswith("package-"):
                domain = "dram:" + parent.removeprefix("package-")
            else:
                domain = f"dram:{cand.indices[0]}"
        elif cand.name == "psys":
            notes.append(
                f"{cand.label} (psys) skipped: the platform zone contains the package zones."
            )
        else:
            nested.append(f"{cand.label} ({cand.name or 'unnamed'})")
        if domain is None:
            continue
        if domain in chosen:
            notes.append(
                f"{cand.label} ({cand.name}) skipped: the same domain as {chosen[domain].label}."
            )
            continue
        chosen[domain] = cand
    if nested:
        notes.append(
            f"{', '.join(nested)} skipped: contained in their package zone (no double counting)."
        )
    if chosen and not any(d.startswith("dram:") for d in chosen):
        notes.append("no dram zone: DRAM energy not measured (usual on client CPUs and on AMD).")
    return list(chosen.items()), notes


def find_rapl_zones(root: str | os.PathLike[str] | None = None) -> RaplZones:
    """Scan a powercap tree for readable package and dram zones.

    Args:
        root: the powercap root; default as in :func:`powercap_root`.

    Returns:
        The readable zones (one per domain) and notes on what was left out.

    Raises:
        SensorUnavailable: no tree, no package zone, or no zone readable (the permission case
            carries the reason and fix of :data:`PERMISSION_REASON` / :data:`PERMISSION_FIX`).
    """
    base = powercap_root(root)
    given = (
        "given with --powercap-root (powercap_root=)"
        if root is not None
        else f"set by ${POWERCAP_ROOT_ENV}"
        if os.environ.get(POWERCAP_ROOT_ENV)
        else None
    )
    if given is not None and not base.is_dir():
        # A path the user typed: its absence is a typo to fix, not a machine without RAPL.
        state = "is not a folder" if base.exists() else "does not exist"
        raise SensorUnavailable(
            f"CPU energy not measured: the powercap root {base}, {given}, {state}.",
            f"check the path; the system's tree is {DEFAULT_POWERCAP_ROOT}, used when no root "
            "is given.",
        )
    if not base.is_dir():
        raise SensorUnavailable(
            f"CPU energy not measured: no powercap tree at {base} (not Linux, or a VM or "
            "container without RAPL).",
            "on bare-metal Linux load the driver (`sudo modprobe intel_rapl_msr`); in a "
            f"container bind-mount /sys/class/powercap and set {POWERCAP_ROOT_ENV} to it; on "
            "a VM there is usually no RAPL, so CPU energy can only be estimated.",
        )
    selected, notes = _classify(_scan(base))
    if not selected:
        raise SensorUnavailable(
            f"CPU energy not measured: no RAPL package zone (intel-rapl:N named package-N) "
            f"under {base}.",
            "load the RAPL driver (`sudo modprobe intel_rapl_msr`); a CPU without RAPL can only "
            "be estimated.",
        )
    zones: list[RaplZone] = []
    denied: list[str] = []
    broken: list[str] = []
    for domain, cand in selected:
        try:
            max_uj = _read_int(cand.path / "max_energy_range_uj")
            _read_int(cand.path / "energy_uj")
        except PermissionError:
            denied.append(cand.label)
            continue
        except (OSError, SensorError) as exc:
            broken.append(f"{cand.label}: {exc}")
            continue
        if max_uj <= 0:
            broken.append(f"{cand.label}: max_energy_range_uj is {max_uj}, expected > 0")
            continue
        zones.append(RaplZone(domain, cand.name, cand.path, max_uj, _stated_max_power_w(cand.path)))
    if not zones:
        if denied:
            raise SensorUnavailable(PERMISSION_REASON, PERMISSION_FIX)
        raise SensorUnavailable(
            f"CPU energy not measured: no RAPL zone could be read ({'; '.join(broken)}).",
            "check the powercap driver (`dmesg | grep -i rapl`).",
        )
    if denied:
        notes.append(f"{', '.join(denied)}: permission denied; left out. Fix: {PERMISSION_FIX}")
    notes.extend(f"left out, unreadable: {b}" for b in broken)
    return RaplZones(tuple(zones), tuple(notes))


class RaplSensor:
    """One RAPL zone as a sensor: cumulative joules with wraparound handled.

    Each read adds ``(raw - previous_raw) mod max_energy_range_uj`` to a running total. That
    difference is right as long as reads are less than one wrap period apart, which the
    background thread guarantees: it reads every ``min(10 s, wrap_time / 4)`` where
    ``wrap_time = max_energy_range_uj / max(max_power_w, ceiling)``. Each difference is
    checked against the zone's power ceiling (:func:`power_ceiling_w`: twice its stated
    maximum power, else 1 kW) over the time between the two reads: a counter that went back
    by more than the ceiling allows was reset, not wrapped; reads further apart than a whole
    range at the ceiling may hide wraps. Either way nothing is added for that interval, and
    the next :meth:`read_j` raises :class:`ReadingAnomaly` with the total to go on from.
    ``read_j()`` itself reads the file (tens of µs), so results are never stale; ``peek_j()``,
    for live displays, re-reads it only when the latest reading is older than
    :data:`PEEK_MAX_AGE_S`.

    Args:
        zone: a zone from :func:`find_rapl_zones`.
        background: start the background reader (default True). Without it, call
            :meth:`poll` yourself more often than the counter wraps.
        poll_period_s: the background read period; default from the wrap time as above.
        max_power_w: the most power the zone is assumed to draw (timing only).
        clock: seconds, for the age of the latest reading (default ``time.monotonic``).

    Raises:
        SensorError: the first read failed.
    """

    kind = SensorKind.COUNTER
    host_wide = True
    update_period_s = _RAPL_UPDATE_PERIOD_S
    min_window_s = _RAPL_MIN_WINDOW_S

    def __init__(
        self,
        zone: RaplZone,
        *,
        background: bool = True,
        poll_period_s: float | None = None,
        max_power_w: float = DEFAULT_MAX_ZONE_POWER_W,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zone = zone
        self.domain = zone.domain
        self.source = f"RAPL powercap {zone.path.name} ({zone.name}) energy_uj"
        self._energy_path = zone.path / "energy_uj"
        self._modulus_uj = zone.max_energy_range_uj
        self.power_limit_w = zone.max_power_w
        self._ceiling_w = power_ceiling_w(self)
        # µJ / (J/s x 1e6 µJ/J) = s
        self.wrap_time_s = zone.max_energy_range_uj / (max(max_power_w, self._ceiling_w) * 1e6)
        self.poll_period_s = (
            float(poll_period_s)
            if poll_period_s is not None
            else min(MAX_POLL_PERIOD_S, self.wrap_time_s / 4)
        )
        self._lock = threading.Lock()
        self._clock = clock
        self._total_uj = 0
        self._last_raw_uj = self._read_raw()
        self._read_at_s = clock()  # when the file was last read (or a peek tried to)
        self._raw_at_s = self._read_at_s  # when _last_raw_uj was read
        self._anomaly: tuple[str, str] | None = None  # a lost interval since the last read_j
        self._bg_error: Exception | None = None
        self._sampler: Sampler | None = None
        if background:
            self._sampler = Sampler(
                self.poll,
                self.poll_period_s,
                f"lte-rapl-{zone.domain}",
                self._remember_error,
            )
            self._sampler.start()

    @property
    def background_polls(self) -> int:
        """How many background reads have happened (0 without a background reader)."""
        return self._sampler.polls if self._sampler is not None else 0

    def poll(self) -> float:
        """Read the counter now, fold the increase into the total, and return the total in J.

        Raises:
            SensorError: the file could not be read.
        """
        with self._lock:  # read and fold under one lock: two readers must not cross
            raw = self._read_raw()
            now_s = self._clock()
            gap_s = max(now_s - self._raw_at_s, 0.0)
            # Modular difference: one wrap between reads is undone; more cannot be seen.
            increase_uj = (raw - self._last_raw_uj) % self._modulus_uj
            anomaly = self._classify(raw, increase_uj, gap_s)
            if anomaly is None:
                self._total_uj += increase_uj
            elif self._anomaly is None:  # the first since the last read_j says the most
                self._anomaly = anomaly
            self._last_raw_uj = raw
            self._read_at_s = self._raw_at_s = now_s
            return self._total_uj / 1e6

    def _classify(self, raw_uj: int, increase_uj: int, gap_s: float) -> tuple[str, str] | None:
        """None when ``increase_uj`` over ``gap_s`` can be true; else (kind, reason)."""
        ceiling_uj_s = self._ceiling_w * 1e6  # W -> µJ/s
        if gap_s * ceiling_uj_s >= self._modulus_uj:
            # µJ / (µJ/s) = s
            return (
                ANOMALY_MULTI_WRAP,
                f"{self.domain}: {gap_s:.3g} s passed between two reads of {self._energy_path}, "
                f"time enough to wrap its {self._modulus_uj / 1e6:.6g} J range at the "
                f"{self._ceiling_w:g} W ceiling (a wrap every "
                f"{self._modulus_uj / ceiling_uj_s:.3g} s): how many wraps were missed cannot be "
                "known (was the process stopped?)",
            )
        span_s = gap_s + self.update_period_s  # the register's own update period
        if raw_uj < self._last_raw_uj and increase_uj > ceiling_uj_s * span_s:
            return (
                ANOMALY_RESET,
                f"{self.domain}: {self._energy_path} went back from {self._last_raw_uj} to "
                f"{raw_uj} uJ in {gap_s:.3g} s; as a wrap that is {increase_uj / 1e6:.6g} J, "
                f"{increase_uj / 1e6 / span_s:.3g} W, above the {self._ceiling_w:g} W ceiling, so "
                "the counter was reset and the energy between the reads is unknown",
            )
        return None

    def read_j(self) -> float:
        """Cumulative joules since the sensor was created.

        Raises:
            ReadingAnomaly: since the last read_j the counter was reset, or two reads were so
                far apart that wraps may have been missed (see the class docstring).
            SensorError: this read failed, or a background read failed since the last read_j
                (a wrap may have been missed, so the interval cannot be vouched for).
        """
        error, self._bg_error = self._bg_error, None
        value = self.poll()
        with self._lock:
            anomaly, self._anomaly = self._anomaly, None
        if anomaly is not None:
            raise ReadingAnomaly(anomaly[0], anomaly[1], value)
        if error is not None:
            raise SensorError(
                f"{self.domain}: a background RAPL read failed ({error}); energy since the "
                "previous read may miss a counter wrap."
            ) from error
        return value

    def peek_j(self) -> float | None:
        """The latest total, at most :data:`PEEK_MAX_AGE_S` old; never raises.

        The file is read again only when the latest reading is older than that, so a display
        that peeks on every step costs the training thread a file read a few times a second,
        not once per step. A failed read gives the last known total.
        """
        now_s = self._clock()
        if now_s - self._read_at_s < PEEK_MAX_AGE_S:
            return self._total_uj / 1e6
        try:
            return self.poll()
        except SensorError:
            self._read_at_s = now_s  # a failing file is not retried on every step either
            with self._lock:
                return self._total_uj / 1e6

    def close(self) -> None:
        """Stop the background reader. Idempotent."""
        if self._sampler is not None:
            self._sampler.stop()

    def _remember_error(self, exc: Exception) -> None:
        self._bg_error = exc

    def _read_raw(self) -> int:
        try:
            return _read_int(self._energy_path)
        except PermissionError as exc:
            raise SensorUnavailable(PERMISSION_REASON, PERMISSION_FIX) from exc
        except OSError as exc:
            raise SensorError(f"{self.domain}: reading {self._energy_path} failed: {exc}") from exc


def rapl_sensors(
    root: str | os.PathLike[str] | None = None,
    *,
    background: bool = True,
    max_power_w: float = DEFAULT_MAX_ZONE_POWER_W,
    poll_period_s: float | None = None,
) -> tuple[list[RaplSensor], tuple[str, ...]]:
    """One :class:`RaplSensor` per readable package and dram zone.

    Args:
        root: the powercap root; default as in :func:`powercap_root`.
        background: start each sensor's background reader.
        max_power_w: the most power one zone is assumed to draw (timing only).
        poll_period_s: the background read period; default from the wrap time.

    Returns:
        The sensors and the notes from :func:`find_rapl_zones`.

    Raises:
        SensorUnavailable: as :func:`find_rapl_zones`.
    """
    found = find_rapl_zones(root)
    sensors: list[RaplSensor] = []
    try:
        for zone in found.zones:
            sensors.append(
                RaplSensor(
                    zone,
                    background=background,
                    max_power_w=max_power_w,
                    poll_period_s=poll_period_s,
                )
            )
    except Exception:
        for sensor in sensors:
            sensor.close()
        raise
    return sensors, found.notes
