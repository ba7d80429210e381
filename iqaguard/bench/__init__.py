"""Load and speed tools around a served repository: load generator, Locust load test, benchmark.

They need the server side (torch, the in-process pipeline, the embedded launcher), so they live
here rather than in the thin client distribution (./client, import iqaguard_client).
"""
