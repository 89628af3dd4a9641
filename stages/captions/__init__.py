"""The `captions` stage: a caption per clip (VideoBLIP, narrations or a file) and its text embedding."""
