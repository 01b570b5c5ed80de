"""MongoDB storage: each module hides the driver and returns dataclasses or DataFrames."""
