"""Unidirectional WebRTC sessions, stack-neutral.

spec (StreamSpec: generic keys + the stack's options), stack (the Stack protocol and the named
stacks), record (the endpoint record every stack writes), sources (Source protocol, pacing,
synthetic and video sources), ratecontrol (controller -> source), rtp (header parsing),
signaling (JSON lines with the orchestrator), capture (tcpdump + pcap), framelog (the per-frame
table from records + wire), timeseries, session (one session over a topology).
aiortc/ is the aiortc stack: the only code that imports aiortc.
"""
