from .pipeline_harivo import HarivoPipeline
from .pipeline_harivo_controlnet import HarivoControlNetPipeline
from .pipeline_harivo_image2video import HarivoImageToVideoPipeline
from .pipeline_harivo_video2video import HarivoVideoToVideoPipeline

__all__ = ["HarivoControlNetPipeline", "HarivoImageToVideoPipeline", "HarivoPipeline", "HarivoVideoToVideoPipeline"]
