"""rtc-testbed: network emulation and measurement for real-time video."""

__version__ = "0.1.0"
