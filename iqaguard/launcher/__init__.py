"""The embedded Triton server, from outside: backend directory, process control, `iqaguard-serve`.

Runs in the caller's process (never inside Triton); the code Triton's stubs run is iqaguard.in_triton.
"""
