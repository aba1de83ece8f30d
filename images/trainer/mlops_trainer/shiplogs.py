"""`ship-logs`: the serving pods' sidecar that moves the prediction log to S3 (issue #17).

The server appends JSON lines to DIR/{predictions,feedback,labels}-<host>.jsonl, opening the
file for each flush (at least once a second) and closing it again. Every `--interval` seconds
this program closes a time window: it renames each such file into DIR/.outbox/ as
`<kind>-<host>-<window end, UTC>.jsonl` (the server's next flush starts a new file), waits
`SETTLE_SECONDS` so a flush that opened the old name just before the rename has finished
writing, then uploads each outbox file to `<to>/<host>/<its name>` and removes it.

Invariants: every line ends up in exactly one object; an object is written once under a name
no other pod or window uses (host + window end), never rewritten, so replicas never share an
object and a reader never sees a read-modify-write; a failed upload keeps the file in the outbox
and is retried on the next tick (the same name, the same bytes); SIGTERM (the pod stopping:
a native sidecar is stopped after the server has flushed and exited) ships what is left, then
exits 0. The trainer reads the prefix back (data.py reads feedback-/labels-/predictions-*.jsonl
recursively), so retraining sees every labelled row once.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Final

from mlops_contract import storage
from mlops_trainer.errors import BadInput
from mlops_trainer.logs import log

KINDS: Final = ("predictions", "feedback", "labels")
OUTBOX: Final = ".outbox"
SETTLE_SECONDS: Final = 2.0  # > the server's longest flush (open, write, close) by far


def rotate(directory: Path, host: str, now: float) -> list[Path]:
    """Move the current log files into the outbox under their window's name; -> what moved."""
    outbox = directory / OUTBOX
    outbox.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    moved = []
    for kind in KINDS:
        current = directory / f"{kind}-{host}.jsonl"
        if current.is_file() and current.stat().st_size:
            target = outbox / f"{kind}-{host}-{stamp}.jsonl"
            current.rename(target)
            moved.append(target)
    return moved


def upload_outbox(directory: Path, to: str, host: str, env: Mapping[str, str]) -> int:
    """Upload each outbox file to <to>/<host>/<name>, removing it once stored; -> files shipped."""
    outbox = directory / OUTBOX
    files = sorted(p for p in outbox.glob("*.jsonl") if p.is_file()) if outbox.is_dir() else []
    for path in files:
        storage.upload_file(path, f"{to.rstrip('/')}/{host}/{path.name}", env)
        path.unlink()
    return len(files)


def ship_once(
    directory: Path, to: str, host: str, env: Mapping[str, str], settle: float = SETTLE_SECONDS
) -> int:
    """Close the current window and ship every finished one; -> files shipped."""
    if rotate(directory, host, time.time()):
        time.sleep(settle)
    return upload_outbox(directory, to, host, env)


def run_ship_logs(
    directory: str, to: str, interval: float, env: Mapping[str, str], host: str | None = None
) -> dict[str, Any]:
    """Ship windows every `interval` seconds until SIGTERM, then the last one; -> the result."""
    if storage.parse_uri(to).scheme != "s3":
        raise BadInput(f"--to {to}: ship-logs writes to s3:// only")
    if interval <= 0:
        raise BadInput(f"--interval must be positive, got {interval}")
    name = host or socket.gethostname()
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, stopping)
    shipped, failures = 0, 0
    try:
        while True:
            last = stop.wait(interval)
            try:
                shipped += ship_once(path, to, name, env)
            except storage.FetchError as e:  # kept in the outbox; the next tick tries again
                failures += 1
                log("Could not ship the prediction log", to=to, transient=e.transient, error=str(e))
                if last:
                    raise
            if last:
                break
    finally:
        signal.signal(signal.SIGTERM, previous)
    log("Shipped the prediction log", to=to, files=shipped, failures=failures)
    return {"ok": True, "files": shipped, "failures": failures}
