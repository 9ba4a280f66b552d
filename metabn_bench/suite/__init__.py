"""Suites: the resumable suite runner, its jobs, status and launchers."""
