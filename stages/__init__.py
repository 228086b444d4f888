"""One module per pipeline stage (teacher, distill, baseline, prune, export, quantize,
benchmark, package, report), the recipes they share, and `kd`, the distillation library."""
