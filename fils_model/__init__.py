"""FILS: self-supervised video feature prediction in semantic language space (arXiv 2406.03447).

Public entry points: :class:`fils_model.config.PretrainConfig`, :class:`fils_model.fils.FILSModel`,
:class:`fils_model.trainer.Trainer`, :func:`fils_model.export.export_videomae`.
"""
