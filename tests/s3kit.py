"""A real S3 server for tests (issue #17): versitygw on its posix backend, on a free loopback port.

`ensure_binary` builds versitygw from the Go module proxy when the cache lacks it (through
tests/cluster/local/s3.sh, the same script the local cluster uses) and says how long that took.
`S3Server.start` runs one server with a fresh data directory and generated credentials, waits
until it answers, and `stop` ends it by its PID. Nothing here skips: a missing Go toolchain or a
failed build is an error, so CI runs the S3 tests or fails.

Invariants: the server listens on 127.0.0.1 only; credentials are passed in its environment,
never on its command line; `env` is what a Kubernetes Secret would put in a pod (the variable
names boto3 and KServe read).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SCRIPT: Final = Path(__file__).resolve().parent / "cluster" / "local" / "s3.sh"
REGION: Final = "us-east-1"
HEALTH_PATH: Final = "/mlops-health"
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0


def log(message: str) -> None:
    """Progress on stderr (pytest shows it with -s, and in the captured output of a failure)."""
    print(f"[s3kit] {message}", file=sys.stderr, flush=True)


def ensure_binary() -> Path:
    """The versitygw binary, built first when missing; raises with the build's output on failure."""
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "build"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT} build failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    binary = Path(done.stdout.strip().splitlines()[-1])
    took = time.monotonic() - started
    log(f"versitygw binary {binary} ({'built' if done.stderr.strip() else 'cached'}, {took:.1f} s)")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # loopback http only
            return int(response.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class S3Server:
    """One running versitygw; `env` holds the variables a pod would get from the Secret."""

    process: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    _client: Any = None

    @classmethod
    def start(cls, binary: Path, workdir: Path, port: int | None = None) -> S3Server:
        port = port or free_port()
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True)
        access, secret = f"mlops{secrets.token_hex(6)}", secrets.token_urlsafe(24)
        log_path = workdir / "versitygw.log"
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": access, "ROOT_SECRET_ACCESS_KEY": secret}
        started = time.monotonic()
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [str(binary), "--port", f"127.0.0.1:{port}", "--region", REGION, "--health", HEALTH_PATH,
                 "--quiet", "posix", str(data_dir)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        server = cls(process, f"http://127.0.0.1:{port}", access, secret, data_dir, log_path)
        deadline = started + START_TIMEOUT_SECONDS
        while not _healthy(server.endpoint + HEALTH_PATH):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"versitygw did not start on {server.endpoint}:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        log(
            f"versitygw pid {process.pid} serving {server.endpoint} ({time.monotonic() - started:.2f} s to healthy)"
        )
        return server

    @property
    def env(self) -> dict[str, str]:
        """The Secret's variables (see tests/cluster/local/s3.sh: the cluster's Secret has the same keys)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """The boto3 client of this server (path-style), independent of the code under test;
        one per server (thread-safe), closed by `stop` so no socket outlives the session."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=REGION,
                config=Config(
                    s3={"addressing_style": "path"}, retries={"max_attempts": 1}, max_pool_connections=16
                ),
            )
        return self._client

    def bucket(self, name: str) -> str:
        """Creates bucket `name` (S3 rules: lower case, 3-63 characters) and returns its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """TERM, wait, then KILL: by this process's PID only."""
        if self._client is not None:
            self._client.close()
            self._client = None
        stop_process(self.process)
        log(f"versitygw pid {self.process.pid} stopped (exit {self.process.returncode})")


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """TERM, wait, then KILL: by this process's PID only (a no-op once it exited)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def bucket_name(test_name: str) -> str:
    """A valid, unique bucket name for a test (S3: [a-z0-9-], 3-63 characters)."""
    stem = "".join(c if c.isalnum() else "-" for c in test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{secrets.token_hex(4)}"
