"""Code that runs inside the Triton server's Python backends."""
