"""The framework-free core: :class:`~lightning_to_energy.tracking.tracker.EnergyTracker`."""
