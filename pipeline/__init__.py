"""compress: the pipeline spine (CLI, config, run directory, data, models, training loop)."""
