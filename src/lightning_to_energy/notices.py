"""Our own warning category, shown as one clean line.

Every notice the package gives while a run goes on (a sensor that only estimates, a sensor
fault, a calibration not saved...) is an :class:`EnergyWarning`. Python shows a warning as
``/path/to/file.py:203: RuntimeWarning: text`` plus the source line; ours print as
``lightning-to-energy: text``, one line each. Only the formatting of this category changes:
the user's warning filters, and the look of every other category, stay as they are.

Filter them as any warning: ``warnings.filterwarnings("ignore", category=EnergyWarning)``.
"""

from __future__ import annotations

import warnings

__all__ = ["PREFIX", "EnergyWarning", "install_format", "warn"]

PREFIX = "lightning-to-energy: "


class EnergyWarning(RuntimeWarning):
    """A notice from lightning-to-energy: printed as one line, without a source path.

    NB: a RuntimeWarning subclass, so filters and tests written for the RuntimeWarnings the
    package gave before keep working.
    """


def _line(message: Warning | str) -> str:
    text = " ".join(str(message).split())  # one line, whatever the message held
    # "lightning-to-energy study: ..." names itself already
    return f"{text}\n" if text.startswith(PREFIX.rstrip(": ")) else f"{PREFIX}{text}\n"


def install_format() -> None:
    """Show :class:`EnergyWarning` (and subclasses) as one line; idempotent.

    Wraps whatever ``warnings.formatwarning`` is at the time (Lightning installs its own when
    it is imported): other categories go to it unchanged. Called by :func:`warn` before each
    warning, so an import order that replaced the wrapper cannot lose it.
    """
    current = warnings.formatwarning
    if getattr(current, "_lightning_to_energy", False):
        return

    def formatwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        if isinstance(category, type) and issubclass(category, EnergyWarning):
            return _line(message)
        return current(message, category, filename, lineno, line)

    formatwarning._lightning_to_energy = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def warn(message: str, category: type[EnergyWarning] = EnergyWarning, stacklevel: int = 2) -> None:
    """``warnings.warn(message, category)``, shown as one line (see :func:`install_format`).

    Args:
        message: the notice; the ``lightning-to-energy:`` prefix is added when missing.
        category: :class:`EnergyWarning` or a subclass.
        stacklevel: as for :func:`warnings.warn`, counted from the caller of this function.
    """
    install_format()
    warnings.warn(message, category, stacklevel=stacklevel + 1)
