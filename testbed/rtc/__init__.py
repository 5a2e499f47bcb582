"""Unidirectional WebRTC sessions (aiortc): sources, sender and receiver processes, frame log."""
