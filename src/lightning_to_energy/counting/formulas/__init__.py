"""Op formulas, one module per family; importing this package registers all of them.

``matrix``: matmuls, convolutions, attention. ``zero``: views, allocation, fills and copies.
``vector``: element-wise ops, reductions, norms, losses, pooling. ``optim``: optimizer updates.
"""

from __future__ import annotations

from lightning_to_energy.counting.formulas import matrix, optim, vector, zero

__all__ = ["matrix", "optim", "vector", "zero"]
