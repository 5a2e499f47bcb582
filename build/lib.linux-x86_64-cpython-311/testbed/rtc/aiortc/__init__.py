"""The aiortc stack: the only package that imports aiortc.

stack.py     what the stack offers and its options (imported at validation; no aiortc import)
endpoint.py  the sender and receiver processes
compat.py    every patch of aiortc internals, checked against the version they were written for
track.py     stack-neutral sources (testbed.rtc.sources) as aiortc MediaStreamTracks, paced
"""
