"""Streaming front end: audio sources, webrtcvad segmentation and the live transcription session."""

from edgeasr.stream.events import Event, LineChanged, LineCompleted, LineEvent, LineStarted, event_from_dict
from edgeasr.stream.session import SessionOptions, StreamingSession
from edgeasr.stream.vad import VADOptions, VADSegmenter

__all__ = ["Event", "LineChanged", "LineCompleted", "LineEvent", "LineStarted", "SessionOptions",
           "StreamingSession", "VADOptions", "VADSegmenter", "event_from_dict"]
