"""Prefect orchestration: the `fils` flow and its deployments. Thin wrappers over `stages/` and `pipeline/`."""
