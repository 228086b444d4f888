"""The distillation library: loss terms registered by name, the training objective that combines
them, and where the teacher's signal comes from. Not a stage: stages use it.

Importing this package registers every term (torchdistill's registry pattern): the term modules
register into `registry`, and the registry imports none of them.
"""
from compress.methods.kd import adversarial, feature, logit, online  # noqa: F401  (registration)
