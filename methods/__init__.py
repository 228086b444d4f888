"""The library the stages compose: distillation terms and objective, teacher signals, training
recipes, pruning, int8 candidate search, QAT and the ExecuTorch choice. Its functions take what
they use (a model, data, a device, a recipe, the paths they write), never a stage's Context."""
