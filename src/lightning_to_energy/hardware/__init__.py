"""The machine: its identity and fingerprint, datasheet specs, detection and roofline times.

Bottom layer next to :mod:`lightning_to_energy.counting`: nothing here imports a higher room.
"""
