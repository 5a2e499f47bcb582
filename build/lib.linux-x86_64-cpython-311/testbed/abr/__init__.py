"""Bitrate controllers (ABR): pure, time-injected code that turns feedback into a target."""
