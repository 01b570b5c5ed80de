"""SMIB Console core: codec, bus, store, analytics, simulator and CLI for a fleet of SMIBs."""

__version__ = "0.1.0"
