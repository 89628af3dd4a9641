"""Text embeddings of captions with the frozen text encoder (`stages.captions.text_encoders`).

Only ``ok`` captions are embedded; the others get a zero vector so every clip keeps a row and loaders can
skip them by status (see ``stages.captions.tables``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stages.captions.config import CaptionsConfig
from stages.captions.tables import EMBEDDING_SCHEMA, STATUS_OK

if TYPE_CHECKING:
    from stages.captions.text_encoders import TextEncoder


@lru_cache(maxsize=1)
def load_encoder(backend: str, model: str, pretrained: str | None, checkpoint: str | None, allow_pickle: bool,
                 device: str | None) -> TextEncoder:
    """Loaded once per worker process and reused for its next shards."""
    from stages.captions.text_encoders import load_text_encoder

    return load_text_encoder(backend, model, pretrained=pretrained,  # type: ignore[arg-type]
                             text_checkpoint=checkpoint, allow_pickle=allow_pickle, device=device)


def embed_captions(cfg: CaptionsConfig, captions: pa.Table) -> pa.Table:
    """One row per caption row: L2-normalised float32 embedding for ``ok`` captions, zeros otherwise."""
    te = cfg.text_encoder
    encoder = load_encoder(te.backend, te.model, te.pretrained, te.checkpoint, te.allow_pickle, cfg.torch_device())
    texts = captions.column("caption").to_pylist()
    ok = [i for i, status in enumerate(captions.column("status").to_pylist()) if status == STATUS_OK]
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if ok:
        vectors[ok] = encoder.encode([texts[i] for i in ok], batch_size=te.batch_size)
    offsets = pa.array(np.arange(0, vectors.size + 1, encoder.dim, dtype=np.int32))
    embedding = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))
    n = len(texts)
    return pa.Table.from_arrays(
        [captions.column("key"), embedding, pa.array([encoder.encoder_id] * n, pa.string()),
         pa.array([encoder.dim] * n, pa.int32())],
        schema=EMBEDDING_SCHEMA,
    )
