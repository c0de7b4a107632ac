"""``lightning_to_energy.cost_model``: a documented import path, kept; the cost model lives in
:mod:`lightning_to_energy.counting.cost_model`.
"""

from __future__ import annotations

from lightning_to_energy.counting import cost_model as _cost_model
from lightning_to_energy.counting.cost_model import *  # noqa: F403

__all__ = [*_cost_model.__all__]

if __name__ == "__main__":
    # `python -m lightning_to_energy.cost_model` prints the derived cost table (docs/cost-model.md).
    print(_cost_model.render_markdown_table())
