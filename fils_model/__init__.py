"""FILS: self-supervised video feature prediction in semantic language space (arXiv 2406.03447).

Public entry points: :class:`fils_model.config.PretrainConfig`, :class:`fils_model.fils.FILSModel`,
:class:`fils_model.pretrain_trainer.PretrainTrainer` and :class:`fils_model.finetune_trainer.FinetuneTrainer`
(both on the one loop in :mod:`fils_model.trainer`), :func:`fils_model.export.export_videomae`.
"""
