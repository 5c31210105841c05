"""Execution: one served model version and how its requests run (queue, batching, threads, worker processes)."""
