"""The package versions a result records (one list, so every record names the same ones)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

RECORDED = ("rtc-testbed", "aiortc", "av", "pyroute2", "numpy", "pandas", "pyarrow", "matplotlib")


def package_versions(packages: tuple[str, ...] = RECORDED) -> dict[str, str]:
    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
