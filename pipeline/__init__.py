"""The top layer: the command line, the stage runner, searches over students, sweeps, tracking."""
