from .pipeline_harivo import HarivoPipeline

__all__ = ["HarivoPipeline"]
