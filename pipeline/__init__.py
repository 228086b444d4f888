"""The top layer: the command line, the stage runner, and sweeps."""
