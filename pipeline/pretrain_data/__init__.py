"""The pretrain stage's data pipeline: WebDataset shards joined by key with the action boxes and caption
embeddings, frame sampling, joint crop/flip of frames and box, token masks, ImageNet normalisation."""
