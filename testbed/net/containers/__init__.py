"""Docker: container hosts on the emulated links (hosts), the daemon (daemon) and the images
the testbed builds with no registry (image). Docs: docs/docker.md."""
