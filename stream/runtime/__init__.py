"""Processes that run: the worker, the merger, the supervisor that starts them."""
