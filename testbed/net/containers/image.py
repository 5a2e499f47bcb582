"""Images with no registry: a local Debian base (debootstrap from apt's own mirror, imported),
and on it the testbed's images, built from wheels made here (pip's own cache and indexes).

    rtc-testbed/debian:bookworm   debootstrap minbase + python3, iproute2, ping, iperf3, make
    rtc-testbed/endpoint:latest   + the testbed in /opt/rtc-testbed (aiortc endpoints)
    rtc-testbed/testbed:latest    + the project with everything `make setup` installs

Each built image carries a label with the digest of the sources it was built from, so a test
or a run can tell a stale image from a current one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from testbed.errors import TestbedError, UnavailableError
from testbed.net.containers.daemon import unmount_under

BASE_TAG = "rtc-testbed/debian:bookworm"
IMAGES = {"endpoint": "rtc-testbed/endpoint:latest", "testbed": "rtc-testbed/testbed:latest"}
BASE_PACKAGES = ("python3", "python3-venv", "iproute2", "iputils-ping", "iperf3", "procps", "make")
LABEL_SOURCE = "rtc-testbed.source"
DOCKERFILE = Path(__file__).with_name("Dockerfile")
PROJECT = Path(__file__).resolve().parents[3]  # a checkout (editable install): pyproject here
WORK = Path("/var/tmp/rtc-testbed")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Say = Callable[[str], None]


def mirror() -> str:
    """The Debian mirror apt already uses (the only one reachable)."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        with contextlib.suppress(OSError):
            text = path.read_text()
            found = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M
            )
            if found:
                return found.group(1)
    return DEFAULT_MIRROR


def source_digest() -> str:
    """sha256 over the testbed's sources and pyproject.toml: what an image was built from."""
    h = hashlib.sha256()
    files = sorted(p for p in (PROJECT / "testbed").rglob("*")
                   if p.is_file() and p.suffix in (".py", ".c", ".js", ".html", "") and
                   "__pycache__" not in p.parts)  # fmt: skip
    for p in [PROJECT / "pyproject.toml", *files]:
        h.update(str(p.relative_to(PROJECT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _scratch(what: str) -> Iterator[Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{what}-{os.getpid()}-", dir=WORK))
    try:
        yield path
    finally:
        unmount_under(path)  # what an interrupted debootstrap mounted (proc, sys, dev/pts)
        shutil.rmtree(path, ignore_errors=True)


def build_base(say: Say = lambda _: None) -> str:
    """debootstrap a minimal bookworm from apt's mirror and import it (about a minute)."""
    from testbed.net.containers import daemon

    if shutil.which("debootstrap") is None:
        raise UnavailableError("debootstrap is not installed: `apt-get install debootstrap` "
                               "(`make setup` installs it)")  # fmt: skip
    c = daemon.client("testbed docker image")
    with _scratch("base") as work:
        root = work / "root"
        say(f"debootstrap bookworm from {mirror()} (about a minute)")
        run = subprocess.run(["debootstrap", "--variant=minbase",
                              f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(root),
                              mirror()], capture_output=True, text=True)  # fmt: skip
        if run.returncode != 0:
            tail = " | ".join((run.stdout + run.stderr).strip().splitlines()[-3:])
            raise TestbedError(f"debootstrap failed ({tail})")
        tar = work / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        repo, tag = BASE_TAG.split(":")
        c.api.import_image_from_file(str(tar), repository=repo, tag=tag,
                                     changes=['CMD ["sleep", "infinity"]'])  # fmt: skip
    say(f"imported {BASE_TAG}")
    return BASE_TAG


def _wheels(src: Path, into: Path, say: Say) -> None:
    """Wheels of the testbed (from its copy SRC: the build leaves nothing in the checkout) and
    everything it needs, dev tools too, from pip's own cache and indexes on this machine: the
    image build then needs no index at all."""
    say("building wheels of the testbed and its dependencies")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(into),
                          f"{src}[dev]", "setuptools>=77", "wheel"],
                         capture_output=True, text=True)  # fmt: skip
    if run.returncode != 0:
        raise TestbedError(f"pip wheel failed: {run.stderr.strip().splitlines()[-1:]}")


def _sources(into: Path) -> None:
    """The project's tracked files (git ls-files), as `make setup` needs them."""
    listed = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        raise TestbedError(f"{PROJECT} is not a git checkout: the testbed image copies its files")
    for name in listed.stdout.decode().split("\0"):
        if name and (PROJECT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, into / name)


def current(kind: str) -> bool:
    """The image of KIND is there and was built from these sources."""
    from docker.errors import ImageNotFound

    from testbed.net.containers import daemon

    try:
        image = daemon.client("testbed docker image").images.get(IMAGES[kind])
    except ImageNotFound:
        return False
    return bool((image.labels or {}).get(LABEL_SOURCE) == source_digest())


def build(kind: str, say: Say = lambda _: None, rebuild_base: bool = False) -> str:
    """Build the image of KIND (endpoint | testbed), the base image first if it is missing."""
    from docker.errors import ImageNotFound

    from testbed.net.containers import daemon

    if kind not in IMAGES:
        raise TestbedError(f"unknown image {kind!r}; valid: {', '.join(IMAGES)}")
    c = daemon.client("testbed docker image")
    try:
        if rebuild_base:
            raise ImageNotFound("asked")
        c.images.get(BASE_TAG)
    except ImageNotFound:
        build_base(say)
    with _scratch("image") as ctx:
        shutil.copy(DOCKERFILE, ctx / "Dockerfile")
        (ctx / "wheels").mkdir()
        (ctx / "src").mkdir()
        _sources(ctx / "src")
        _wheels(ctx / "src", ctx / "wheels", say)
        for left in [ctx / "src" / "build", *(ctx / "src").glob("*.egg-info")]:
            shutil.rmtree(left, ignore_errors=True)  # what the wheel build left in the copy
        say(f"docker build {IMAGES[kind]}")
        log: list[str] = []
        for chunk in c.api.build(path=str(ctx), tag=IMAGES[kind], target=kind,
                                 network_mode="host", rm=True, forcerm=True, decode=True,
                                 buildargs={"BASE": BASE_TAG},
                                 labels={LABEL_SOURCE: source_digest()}):  # fmt: skip
            line = str(chunk.get("stream", "")).strip()
            if line:
                log.append(line)
                if line.startswith("Step "):  # the build's progress: Step 3/9 : RUN ...
                    say(f"  {line[:100]}")
            if "error" in chunk:
                saved = WORK / f"build-{kind}.log"
                saved.write_text("\n".join(log) + "\n")
                raise TestbedError(f"docker build of {IMAGES[kind]} failed: "
                                   f"{str(chunk['error']).strip()} (the whole log: {saved})")  # fmt: skip
    say(f"built {IMAGES[kind]}")
    return IMAGES[kind]
