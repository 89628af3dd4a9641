"""The training loader every training stage shares: shards -> decoded, augmented clips -> batches, deterministic
and exactly resumable (``stream.py``, worker side; ``batches.py``, main-process side; settings in ``config.py``).
What a stage adds to a clip (caption embedding, action tokens, labels, masks) is its :class:`SampleRecipe`."""
