"""The bottom layer: config, data and augmentation, models, the training loop, the run
directory, the stage protocol, errors and provenance. Imports nothing else of compress."""
