"""What pre-training makes of a clip besides its frames (the loader itself is ``pipeline.clips``): the clip's
caption embedding, its action area as the tokens of its crop, and each batch's tube masks, drawn from
(seed, step, rank) so that a resumed run masks exactly as an uninterrupted one, with their visible/masked token
positions (the model gathers by them: fixed shapes, no host sync)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fils_model.config import ModelConfig
from fils_model.masking import tube_mask
from fils_model.token_index import split_tokens
from pipeline.clips.stream import SampleCounter, StreamSettings
from pipeline.video.transforms import CENTRE_BOX, CropFlip, crop_box
from stages.pretrain.config import PretrainDataConfig
from stages.pretrain.side_tables import ClipTables
from stages.pretrain.token_mask import BoxRule, token_mask


@dataclass(frozen=True)
class PretrainRecipe:
    tables: ClipTables
    model: ModelConfig
    missing_action_area: str  # "centre" | "skip"
    box_rule: BoxRule
    seed: int
    skip_reasons: tuple[str, ...] = ("no_caption", "no_action_area")

    def before_decode(self, key: str, meta: dict[str, Any], counter: SampleCounter) -> dict[str, Any] | None:
        embedding = self.tables.embedding(key)
        if embedding is None:
            return counter.skip("no_caption", key, expected=True)
        box = self.tables.box(key)
        if box is None:
            if self.missing_action_area == "skip":
                return counter.skip("no_action_area", key)
            counter["centre_box"] += 1
            box = CENTRE_BOX
        return {"embedding": embedding, "box": box}

    def after_crop(self, fields: dict[str, Any], crop: CropFlip, width: int, height: int) -> dict[str, torch.Tensor]:
        m = self.model
        action = token_mask(crop_box(fields["box"], crop, width, height), m.img_size, m.patch_size, m.num_frames,
                            m.tubelet_size, rule=self.box_rule)
        return {"action_tokens": torch.from_numpy(action), "text_embedding": torch.from_numpy(fields["embedding"].copy())}

    def finish_batch(self, batch: dict[str, Any], step: int, rank: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, step, rank])
        batch["mask"] = tube_mask(len(batch["video"]), self.model.grid, self.model.mask_ratio, rng)
        batch["visible_index"], batch["masked_index"] = split_tokens(batch["mask"], self.model.num_masked)
        return batch


def pretrain_stream(shards: tuple[str, ...], data: PretrainDataConfig, model: ModelConfig, tables: ClipTables,
                    local_batch: int, segment_steps: int, decode_timeout_s: float) -> StreamSettings:
    """The loader settings of a pre-training run: ``data``'s stream with this recipe."""
    recipe = PretrainRecipe(tables, model, data.missing_action_area, data.box_rule, data.seed)
    return StreamSettings(shards=shards, data=data, seed=data.seed, num_frames=model.num_frames,
                          img_size=model.img_size, local_batch=local_batch, segment_steps=segment_steps,
                          decode_timeout_s=decode_timeout_s, recipe=recipe)
