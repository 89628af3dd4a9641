"""The `shard` stage: source videos (dataset adapters) -> re-encoded clips in WebDataset tar shards plus the clip table (`tables.py`)."""
