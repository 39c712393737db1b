"""Experiments: presets (YAML shipped with the package), the resumable runner, the report."""
