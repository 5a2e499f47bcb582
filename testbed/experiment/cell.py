"""Run one cell in its own process (so a crash, or Ctrl-C, unwinds only that cell):

  python -m testbed.experiment.cell --job JSON --out DIR --name RUN

The cell is written into a temporary folder beside DIR and renamed to DIR only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--job", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    args = ap.parse_args(argv)
    from testbed.errors import TestbedError, interrupt_exit_code
    from testbed.files import staging_folder
    from testbed.net.network import terminate_unwinds

    job = json.loads(args.job)
    final = Path(args.out)
    tmp = staging_folder(final)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with terminate_unwinds():
            _run(job, args.name, tmp, final)
        return 0
    except TestbedError as e:
        said, code = f"cell {job['cell_id']}: {_full(final)}{e}", 1
    except KeyboardInterrupt as e:
        said, code = (
            f"cell {job['cell_id']}: interrupted ({e or 'SIGINT'}); nothing of it is kept",
            interrupt_exit_code(e),
        )
    except Exception as e:  # a bug, not a measurement: say so, keep no partial cell
        import traceback

        full = _full(final)
        if not full:
            with contextlib.suppress(OSError):
                traceback.print_exc()
        what = "" if full else "internal error "
        said, code = f"cell {job['cell_id']}: {full}{what}{type(e).__name__}: {e}", 1
    if code == 1 and not _full(final):
        keep_failed(tmp, failed_folder(final), said)  # its logs, for the runner to keep aside
    shutil.rmtree(tmp, ignore_errors=True)  # first: on a full disk even the message may fail
    with contextlib.suppress(OSError):
        print(said, file=sys.stderr, flush=True)
    return code


KEEP_MAX_BYTES = 64 << 20  # a failed cell's files larger than this are not kept (captures)


def failed_folder(final: Path) -> Path:
    """Where a failed cell's folder waits for the worker to send it back (beside FINAL)."""
    return final.with_name(f".failed-{final.name}")


def keep_failed(tmp: Path, into: Path, said: str) -> None:
    """Move what a failed cell wrote (its endpoints' logs, link logs, captures up to
    KEEP_MAX_BYTES each) to INTO with failure.txt saying why: a failure is diagnosed from them.
    Never a result; best effort (a cell that wrote nothing leaves only failure.txt)."""
    shutil.rmtree(into, ignore_errors=True)
    with contextlib.suppress(OSError):
        if tmp.is_dir():
            for f in tmp.rglob("*"):
                if f.is_file() and f.stat().st_size > KEEP_MAX_BYTES:
                    f.unlink()
            tmp.rename(into)
        into.mkdir(exist_ok=True)
        (into / "failure.txt").write_text(said + "\n")


def _full(final: Path) -> str:
    """A prefix naming a full results disk, the likely cause of whatever failed."""
    from testbed.files import disk_full

    full = disk_full(final.parent)
    return f"{full} (nothing of this cell is kept); cause: " if full else ""


def _run(job: dict[str, Any], name: str, tmp: Path, final: Path) -> None:
    """The session into tmp, then tmp renamed to final: the cell exists whole or not at all."""
    from testbed.config import topology_from_dict
    from testbed.files import publish_folder, write_json_atomic
    from testbed.rtc.session import run_stream
    from testbed.rtc.spec import parse_stream
    from testbed.shaping.backends import make_backend

    topo = topology_from_dict(job["topology"], job["topology_source"])
    spec = parse_stream(job["stream"], f"cell {job['cell_id']}")
    backend = make_backend(job["backend"])  # chosen once, by the runner
    run_stream(topo, spec, tmp, backend, job["backend_reason"], run=name,
               seed=job["seed"])  # fmt: skip
    cell = json.loads((tmp / "cell.json").read_text())
    cell.update(params=job["params"], cell_id=job["cell_id"], experiment=job["experiment"])
    if "host" in job:  # the worker's host, and the backend the cell's links ran on
        cell["host"] = {**job["host"], "backend": job["backend"]}
    write_json_atomic(tmp / "cell.json", cell)
    publish_folder(tmp, final)  # atomic: the cell exists whole or not at all


if __name__ == "__main__":
    sys.exit(main())
