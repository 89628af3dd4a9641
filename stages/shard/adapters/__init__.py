"""Dataset adapters: each reads one official annotation format and yields the clips to shard."""
from stages.shard.adapters.base import AdapterResult, AnnotationError, ClipSpec
from stages.shard.adapters.registry import list_clips

__all__ = ["AdapterResult", "AnnotationError", "ClipSpec", "list_clips"]
