"""Images reach the Prefect UI at a size it renders: small ones as they are, large ones as bounded JPEG previews,
split over several artifacts, each image with the path of its full-resolution file."""
from __future__ import annotations

import base64
import re

import cv2
import numpy as np

from flows.artifacts import MAX_ARTIFACT_BYTES, MAX_INLINE_BYTES, image_pages, inline_image

DATA_URI = re.compile(r"!\[[^\]]*\]\(data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)\)")


def _png(path, height, width, seed):
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)  # incompressible
    cv2.imwrite(str(path), noise)
    return path


def test_a_small_image_is_inlined_as_it_is(tmp_path):
    path = _png(tmp_path / "small.png", 40, 60, 0)
    ((mime, data),) = DATA_URI.findall(inline_image(path))
    assert mime == "image/png" and base64.b64decode(data) == path.read_bytes()


def test_a_large_image_becomes_a_bounded_preview_and_pages_stay_small(tmp_path):
    sheets = [_png(tmp_path / f"sheet_{i}.png", 1800, 2400, i) for i in range(3)]
    assert all(p.stat().st_size > 4 * MAX_INLINE_BYTES for p in sheets)
    pages = image_pages(sheets)
    assert len(pages) >= 2 and all(len(page) <= MAX_ARTIFACT_BYTES for page in pages)
    shown = [found for page in pages for found in DATA_URI.findall(page)]
    assert len(shown) == 3
    for mime, data in shown:
        preview = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert mime == "image/jpeg" and len(base64.b64decode(data)) <= MAX_INLINE_BYTES
        assert preview.shape[1] <= 1280 and preview.shape[0] * 4 == preview.shape[1] * 3  # aspect kept
    assert all(f"full resolution: `{p.absolute()}`" in "".join(pages) for p in sheets)
