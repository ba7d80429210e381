"""Networks and servable modules: the teacher and student networks, normalising wrappers, the detector."""
