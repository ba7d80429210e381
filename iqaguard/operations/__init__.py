"""Operating a running server: rolling model sets out and back (`iqaguard-models`)."""
