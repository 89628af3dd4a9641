"""The root of the config tree. Each stage owns one section; only `workdir` and `data.source` are required."""
from pathlib import Path

from pydantic import Field

from pipeline.config.base import Section
from pipeline.config.captions import CaptionsConfig
from pipeline.config.data import DataConfig
from pipeline.config.evaluate import EvaluateSection
from pipeline.config.finetune import FinetuneSection
from pipeline.config.optical_flow import OpticalFlowConfig
from pipeline.config.pretrain import PretrainSection
from pipeline.config.runtime import RuntimeConfig
from pipeline.config.shard import ShardConfig


class FilsConfig(Section):
    workdir: Path = Field(description="Every stage writes its artifacts to <workdir>/<stage>/.")
    data: DataConfig
    runtime: RuntimeConfig = RuntimeConfig()
    shard: ShardConfig = ShardConfig()
    optical_flow: OpticalFlowConfig = OpticalFlowConfig()
    captions: CaptionsConfig = CaptionsConfig()
    pretrain: PretrainSection | None = Field(default=None, description="Needed by the pretrain stage.")
    finetune: FinetuneSection | None = Field(default=None, description="Needed by the finetune stage.")
    evaluate: EvaluateSection = EvaluateSection()
