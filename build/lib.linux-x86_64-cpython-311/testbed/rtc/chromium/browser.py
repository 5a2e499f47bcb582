"""One headless Chromium, started and ended by pid, inside the caller's namespace.

Its profile, HOME and caches live in one folder (the run's state folder): nothing goes to the
real HOME. Every process of its tree is ours to end: the browser leads its own session, and the
two crash handlers it always starts (they re-parent to init, in sessions of their own) carry the
profile path in their command line, which is noted (ledger.note_owned) before the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from testbed.net.ledger import OWNED_FILE_ENV, end_process, note_owned, owned_processes
from testbed.procstat import clock_ticks_per_s, exit_words, read_stat
from testbed.rtc.chromium.cdp import Cdp

CHROMIUM = Path("/usr/lib/chromium/chromium")  # the binary: /usr/bin/chromium's wrapper adds flags
PAGE = Path(__file__).parent / "page" / "endpoint.html"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows", "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
    "--allow-file-access-from-files", "--remote-debugging-pipe",
)  # fmt: skip


def missing() -> str | None:
    """Why Chromium cannot run here (None: it can)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium is not installed ({CHROMIUM}); run `make setup`"
    return None


class Browser:
    """A browser process tree and its DevTools pipe."""

    def __init__(self, profile: Path, flags: list[str]) -> None:
        self.profile = profile
        self.flags = flags
        self.owned = os.environ.get(OWNED_FILE_ENV) or str(profile.parent / f"{profile.name}.owned")
        self.proc: subprocess.Popen[bytes] | None = None
        self.cdp: Cdp | None = None
        self.started_ns = 0
        self.cpu_ticks: dict[int, int] = {}

    async def start(self) -> Cdp:
        shutil.rmtree(self.profile, ignore_errors=True)
        home = self.profile / "home"
        home.mkdir(parents=True)
        note_owned(self.owned, marker=str(self.profile))  # before anything of it exists
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != OWNED_FILE_ENV}
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_CACHE_HOME=str(home / ".cache"))  # fmt: skip

        def fds() -> None:  # the DevTools pipe is fds 3 (commands in) and 4 (replies out)
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={self.profile / 'data'}", *self.flags,
                PAGE.as_uri()]  # fmt: skip
        self.started_ns = time.monotonic_ns()
        with open(self.profile / "stderr.txt", "wb") as stderr:
            self.proc = subprocess.Popen(argv, env=env, preexec_fn=fds, start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr, pass_fds=(3, 4))  # fmt: skip
        note_owned(self.owned, pid=self.proc.pid)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.cdp = Cdp(to_browser_w, from_browser_r)
        await self.cdp.open()
        return self.cdp

    def ended(self, wait_s: float = 1.0) -> str | None:
        """How the browser ended, in words, if it has (None: it runs, or never started)."""
        if self.proc is None:
            return None
        try:
            returncode = self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None
        return f"the browser (pid {self.proc.pid}) {exit_words(returncode)}"

    def stderr_tail(self) -> str:
        try:
            lines = (self.profile / "stderr.txt").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-2:])

    def sample_cpu(self) -> None:
        """CPU ticks of every live process of the tree (kept per pid: helpers come and go)."""
        for pid, _ in owned_processes(self.owned):
            st = read_stat(pid)
            if st is not None:
                self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), st.cpu_ticks)

    def cpu_s(self) -> float:
        return sum(self.cpu_ticks.values()) / clock_ticks_per_s()

    def processes(self) -> int:
        return len(self.cpu_ticks)

    async def close(self, keep_log: Path | None = None) -> None:
        """Browser.close over DevTools, then end what is left of the tree by pid; its stderr is
        copied to keep_log (the cell's `ROLE.browser.log`) before the profile goes."""
        if self.proc is None:
            return
        self.sample_cpu()
        if self.cdp is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                await self.cdp.call("Browser.close", timeout_s=3)
        for _ in range(100):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.03)
        for pid, ticks in owned_processes(self.owned):
            end_process(pid, ticks, grace_s=1.0)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if keep_log is not None:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.profile / "stderr.txt", keep_log)
        remove_profile(self.profile)


def remove_profile(profile: Path) -> None:
    """The profile folder and the video clip made for it (testbed.rtc.chromium.endpoint)."""
    shutil.rmtree(profile, ignore_errors=True)
    with contextlib.suppress(OSError):
        (profile.parent / f"{profile.name}-clip.y4m").unlink()
