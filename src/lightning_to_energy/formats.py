"""The identifiers of the JSON files this package writes, in their ``format`` field.

One owner for each, at the bottom of the layers, so that a low layer (the calibration store)
can recognise a file written by a higher one (a report, a study run) and say what to do with it.
"""

from __future__ import annotations

__all__ = ["REPORT_FORMAT", "RUN_FORMAT"]

REPORT_FORMAT = "lightning-to-energy/energy-report"
"""An energy report (:mod:`lightning_to_energy.reporting.codec`)."""

RUN_FORMAT = "lightning-to-energy/study-run"
"""One configuration's study run (:mod:`lightning_to_energy.study.runs`)."""
