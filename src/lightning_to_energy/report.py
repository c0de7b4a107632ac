"""``lightning_to_energy.report``: a documented import path, kept; the report's files, codec and
rendering live in :mod:`lightning_to_energy.reporting.codec`,
:mod:`lightning_to_energy.reporting.files`, :mod:`lightning_to_energy.reporting.plot`,
:mod:`lightning_to_energy.reporting.format`, :mod:`lightning_to_energy.reporting.console`.
"""

from __future__ import annotations

from lightning_to_energy.reporting import codec as _codec
from lightning_to_energy.reporting import console as _console
from lightning_to_energy.reporting import files as _files
from lightning_to_energy.reporting import format as _format
from lightning_to_energy.reporting import plot as _plot
from lightning_to_energy.reporting.codec import *  # noqa: F403
from lightning_to_energy.reporting.console import *  # noqa: F403
from lightning_to_energy.reporting.files import *  # noqa: F403
from lightning_to_energy.reporting.format import *  # noqa: F403
from lightning_to_energy.reporting.plot import *  # noqa: F403

__all__ = [*_codec.__all__, *_files.__all__, *_plot.__all__, *_format.__all__, *_console.__all__]
