"""The embedded Triton server: backend directory, process control and the `iqaguard-serve` launcher."""
