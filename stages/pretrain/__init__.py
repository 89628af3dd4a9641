"""The `pretrain` stage: FILS pretraining of the video encoder on the shards, action areas and caption embeddings."""
