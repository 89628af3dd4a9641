"""Dataset adapters: each reads one official annotation format and yields the clips to shard."""
from pipeline.adapters.base import AdapterResult, AnnotationError, ClipSpec
from pipeline.adapters.registry import list_clips

__all__ = ["AdapterResult", "AnnotationError", "ClipSpec", "list_clips"]
