from .detector import FrameDetection, detect_clip, detect_frame, motion_direction

__all__ = ["FrameDetection", "detect_clip", "detect_frame", "motion_direction"]
