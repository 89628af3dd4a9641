"""The `finetune` stage: supervised fine-tuning (or a linear probe) of the pretrained encoder on the benchmark labels."""
