"""The model build's parts: data, teacher training, distillation, perturbations, detector fitting, evaluation.

`iqaguard.pipeline` puts them together.
"""
