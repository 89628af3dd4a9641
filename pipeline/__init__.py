"""Shared infrastructure of the FILS pipeline: config, artifact store, manifests, video and shard I/O,
dataset adapters and sample data. Stages build on this package; it never imports a stage."""
