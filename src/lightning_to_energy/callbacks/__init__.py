"""The only Lightning code: the :class:`~lightning_to_energy.callbacks.to_energy.TOEnergy`
callback."""
