"""Code that runs inside the Triton server, in its Python-backend stub processes.

- preprocess: the iqa_preprocess model's work (model_repository/iqa_preprocess/1/model.py is its glue).
- pytorch_model + torchscript_runner: the Python-based `pytorch` backend that serves the TorchScript
  members where LibTorch is absent (the launcher copies pytorch_model.py as `pytorch/model.py`).

Nothing here starts or manages a server; that is iqaguard.launcher, outside Triton.
"""
