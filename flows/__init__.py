"""Prefect flows that schedule the DVC pipeline: `pipeline` (the stages of dvc.yaml) and `sweep` (a grid of experiments)."""
