"""iqaguard's Python-based `pytorch` backend: serves TorchScript members when LibTorch is absent."""
