from .pipeline_harivo import HarivoPipeline
from .pipeline_harivo_controlnet import HarivoControlNetPipeline

__all__ = ["HarivoControlNetPipeline", "HarivoPipeline"]
