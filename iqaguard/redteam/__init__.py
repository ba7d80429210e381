"""Adaptive attacks on a served model set: attackers who know the guard (issue: adaptive evaluation)."""
