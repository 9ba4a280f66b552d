"""Data sets (specs and loaders), the corrupted-set store, and the on-device batch loader."""
