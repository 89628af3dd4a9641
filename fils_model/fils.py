"""The FILS model: student encoder, predictor, shared language projector, EMA teacher and the losses."""

from __future__ import annotations

import torch
from torch import nn

from fils_model.config import LossConfig, ModelConfig
from fils_model.diagnostics import effective_rank, feature_std
from fils_model.encoder import VideoEncoder
from fils_model.losses.actclip import ActCLIPLoss, pool_tokens
from fils_model.losses.feature import feature_loss
from fils_model.losses.pixel import pixel_loss, tube_pixels, unnormalise
from fils_model.predictor import Predictor
from fils_model.projector import LanguageProjector, feature_head
from fils_model.teacher import Teacher
from fils_model.token_index import TokenSplit, gather_tokens, split_tokens


class FILSModel(nn.Module):
    """``forward(batch)`` returns a dict with the weighted ``loss``, each loss term and diagnostics.

    Parts are built only for losses with a non-zero weight (the pixel-only VideoMAE baseline has no projector),
    so the only parameters a step can leave without gradient are the encoder blocks when nothing reads them
    (:attr:`has_unused_parameters`, which DDP is told).
    Batch keys: ``video`` (B,3,T,H,W) normalised, ``mask`` (B,N) bool True = masked, ``action_tokens`` (B,N)
    bool, ``text_embedding`` (B,text_dim), optional ``pixels`` (B,3,T,H,W) uint8 or [0,1] float, optional
    ``visible_index``/``masked_index`` (the mask's :class:`~fils_model.token_index.TokenSplit`, made in the
    loader's collate; derived from ``mask`` on the device when absent).
    """

    def __init__(self, cfg: ModelConfig, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.cfg, self.loss_cfg = cfg, loss_cfg
        self.encoder = VideoEncoder(cfg)
        uses_projector = loss_cfg.feature_weight > 0 or loss_cfg.actclip_weight > 0
        self.projector = (
            LanguageProjector(cfg.embed_dim, cfg.projector_hidden_dim, cfg.text_dim) if uses_projector else None
        )
        uses_predictor = loss_cfg.feature_weight > 0 or loss_cfg.pixel_weight > 0
        self.predictor = Predictor(cfg) if uses_predictor else None
        self.feature_head = feature_head(cfg.decoder_dim, cfg.embed_dim) if loss_cfg.feature_weight > 0 else None
        self.pixel_head = (
            nn.Sequential(
                nn.LayerNorm(cfg.decoder_dim), nn.Linear(cfg.decoder_dim, cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2)
            )
            if loss_cfg.pixel_weight > 0
            else None
        )
        self.actclip = (
            ActCLIPLoss(loss_cfg.temperature_init, loss_cfg.max_logit_scale, loss_cfg.gather_negatives,
                        loss_cfg.actclip_normalize)
            if loss_cfg.actclip_weight > 0
            else None
        )
        self.teacher = Teacher(self.encoder, self.projector, cfg.target_source) if self.feature_head else None

    def no_weight_decay(self) -> set[str]:
        """Parameters (timm name patterns) kept out of weight decay besides 1-D tensors and biases: the
        predictor's mask token, as in VideoMAE (CLIP's logit scale is a scalar, so it is excluded already)."""
        return {"*mask_token"}

    @property
    def has_unused_parameters(self) -> bool:
        """True when no loss reads the encoder blocks: ActCLIP alone on tube embeddings (the released code's
        default invocation). DDP must then be built with ``find_unused_parameters``."""
        return self.predictor is None and self.cfg.actclip_source == "tube_embedding"

    def compile_parts(self) -> None:
        """``torch.compile`` the student encoder, the predictor and the teacher in place (the heavy parts; token
        selection by index keeps their shapes fixed, so each compiles to one graph). Weights and state dict are
        untouched: checkpoints load into a compiled or an eager model alike."""
        self.encoder.encode = torch.compile(self.encoder.encode)
        if self.predictor is not None:
            self.predictor.sequence = torch.compile(self.predictor.sequence)
        if self.teacher is not None:
            self.teacher.forward = torch.compile(self.teacher.forward)

    @torch.no_grad()
    def after_step(self, momentum: float | None) -> None:
        """Per optimiser step bookkeeping: EMA teacher update (skipped when ``momentum`` is None) and the
        logit-scale clamp."""
        if self.teacher is not None and momentum is not None:
            self.teacher.update(self.encoder, self.projector, momentum)
        if self.actclip is not None:
            self.actclip.clamp_()

    def forward(self, batch: dict[str, torch.Tensor], diagnostics: bool = False) -> dict[str, torch.Tensor]:
        video, split = batch["video"], self.token_split(batch)
        tokens = self.encoder.embed(video)
        needs_encoder = self.predictor is not None or self.cfg.actclip_source == "encoder"
        visible = self.encoder.encode(tokens, split.visible) if needs_encoder else tokens
        sequence = self.predictor.sequence(visible, split) if self.predictor is not None else None
        out: dict[str, torch.Tensor] = {}
        total = video.new_zeros((), dtype=torch.float32)

        if self.feature_head is not None:
            if self.loss_cfg.feature_pairing == "released_code":
                states = gather_tokens(sequence, split.masked)  # B1: decoder order indexed with the original-order mask
            else:
                states = sequence[:, visible.shape[1] :]
            pred = self.projector(self.feature_head(states))
            target = self.teacher(video, split.masked)
            out["loss_feature"] = feature_loss(pred, target, self.loss_cfg.smooth_l1_beta)
            total = total + self.loss_cfg.feature_weight * out["loss_feature"]
            if diagnostics:
                out |= {
                    "pred_std": feature_std(pred),
                    "target_std": feature_std(target),
                    "pred_erank": effective_rank(pred),
                    "target_erank": effective_rank(target),
                }

        if self.actclip is not None:
            pooled, fallback_rate = self._pooled_video(tokens, visible, split, batch)
            out["loss_actclip"] = self.actclip(pooled, batch["text_embedding"])
            out["logit_scale"] = self.actclip.logit_scale.detach().exp()
            out["actclip_fallback_rate"] = fallback_rate
            total = total + self.loss_cfg.actclip_weight * out["loss_actclip"]

        if self.pixel_head is not None:
            pixels = batch.get("pixels")
            pixels = unnormalise(video) if pixels is None else pixels
            target_px = gather_tokens(
                tube_pixels(pixels, self.cfg.tubelet_size, self.cfg.patch_size, self.loss_cfg.norm_pix_loss),
                split.masked,
            )
            out["loss_pixel"] = pixel_loss(self.pixel_head(sequence[:, visible.shape[1] :]), target_px)
            total = total + self.loss_cfg.pixel_weight * out["loss_pixel"]

        out["loss"] = total
        return out

    def token_split(self, batch: dict[str, torch.Tensor]) -> TokenSplit:
        """The batch's visible/masked positions: the collate's, or made from ``mask`` (``num_masked`` per clip)."""
        if "visible_index" in batch and "masked_index" in batch:
            return TokenSplit(batch["visible_index"], batch["masked_index"])
        return split_tokens(batch["mask"], self.cfg.num_masked)

    def _pooled_video(
        self, tokens: torch.Tensor, visible: torch.Tensor, split: TokenSplit, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ActCLIP video embedding (projected student tokens pooled over the action area) and the fraction of
        clips with no candidate token inside their action area, which fall back to :func:`fallback_select`
        (at 90 % masking a small box often has no visible token)."""
        strategy = self.loss_cfg.actclip_pooling
        action = batch.get("action_tokens")
        if action is None:
            if strategy != "average":
                raise KeyError(f"ActCLIP pooling {strategy!r} needs batch['action_tokens'] (B, N) bool")
            action = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if self.cfg.actclip_source == "tube_embedding":
            projected, select = self.projector(tokens), action
        else:
            projected, select = self.projector(visible), gather_tokens(action, split.visible)
        empty = ~select.any(dim=1) if strategy != "average" else select.new_zeros(len(select))
        return pool_tokens(projected, select, strategy, self.loss_cfg.actclip_fallback), empty.float().mean()
