"""Watching the pipeline: logs, metrics, rolling quality and drift, status and report."""
