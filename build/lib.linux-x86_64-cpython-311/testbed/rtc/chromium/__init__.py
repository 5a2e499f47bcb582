"""libwebrtc through headless Chromium as a Stack: the only package that starts a browser."""
