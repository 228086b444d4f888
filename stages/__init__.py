"""The pipeline's stages (teacher, distill, baseline, prune, export, quantize, benchmark, package,
report), one class per module, each composing compress.methods calls in run()."""
