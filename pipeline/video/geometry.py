"""Output frame sizes: short side scaled, never upscaled, even dimensions (H.264 4:2:0 needs them)."""


def even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side`` (or kept, if smaller), both even."""
    short = min(width, height)
    scale = 1.0 if short_side is None or short <= short_side else short_side / short
    return even(width * scale), even(height * scale)
