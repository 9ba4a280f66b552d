"""Reporting: metrics, statistics, views, documents and plots built from run files."""
