"""``lightning_to_energy.report``: a documented import path, kept; the report's files, codec and
rendering live in :mod:`lightning_to_energy.reporting.codec`,
:mod:`lightning_to_energy.reporting.files`, :mod:`lightning_to_energy.reporting.plot`,
:mod:`lightning_to_energy.reporting.format`, :mod:`lightning_to_energy.reporting.console`.
"""

from __future__ import annotations

from lightning_to_energy.reporting.codec import (
    REPORT_FORMAT,
    SCHEMA_VERSION,
    ReportFormatError,
    load_report,
    report_from_dict,
    report_to_dict,
    to_json_value,
)
from lightning_to_energy.reporting.console import (
    prior_text,
    render_report,
    report_sections,
)
from lightning_to_energy.reporting.files import (
    CSV_BASE_COLUMNS,
    SavedReport,
    csv_columns,
    save_report,
    write_csv,
)
from lightning_to_energy.reporting.format import (
    format_duration,
    format_si,
    ordered_union,
    relative_error,
)
from lightning_to_energy.reporting.plot import (
    MissingExtraError,
    import_matplotlib,
    save_plot,
)

__all__ = [
    "CSV_BASE_COLUMNS",
    "REPORT_FORMAT",
    "SCHEMA_VERSION",
    "MissingExtraError",
    "ReportFormatError",
    "SavedReport",
    "csv_columns",
    "format_duration",
    "format_si",
    "import_matplotlib",
    "load_report",
    "ordered_union",
    "prior_text",
    "relative_error",
    "render_report",
    "report_from_dict",
    "report_sections",
    "report_to_dict",
    "save_plot",
    "save_report",
    "to_json_value",
    "write_csv",
]
