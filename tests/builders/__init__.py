"""Test data and tiny models built offline (generated clips and videos, random VideoBLIP checkpoints, a tiny
finetune set, shard tars, the DDP check's entry point, a headless browser), shared by the tests and the benchmarks
and never imported by the code."""
