"""The distillation terms, registered by name, and the training objective that combines them.

Importing this package registers every term (torchdistill's registry pattern): the term modules
register into `registry`, and the registry imports none of them.
"""
from compress.methods.kd import adversarial, feature, logit, online  # noqa: F401  (registration)
