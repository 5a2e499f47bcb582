"""Link shaping: the pure link model, the userspace emulator, and the backends."""
