"""Shared fixtures for the Countersign compatibility suite.

One real `countersign serve` process is started per pytest session, against a
fresh temporary data directory.  The released `humanlayer==0.7.9` SDK is pointed
at it through HUMANLAYER_API_BASE / HUMANLAYER_API_KEY, exactly as a user would.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from cs_helpers import FakeTwilio, Server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = Path(os.environ.get("COUNTERSIGN_BIN") or (REPO / "target" / "debug" / "countersign"))

LISTEN_RE = re.compile(r"Listening on (http://127\.0\.0\.1:\d+)")
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 20.0


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (
        f"`countersign {' '.join(args)}` exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def create_key(project: str, data_dir: Path) -> str:
    proc = _run_cli("keys", "create", "--project", project, "--data-dir", str(data_dir))
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"`keys create` printed nothing on stdout (stderr: {proc.stderr!r})"
    key = lines[-1]
    assert " " not in key, f"last stdout line of `keys create` is not a bare key: {key!r}"
    return key


def _wait_until_reachable(base_url: str) -> None:
    """Wait until the server accepts connections (GET /healthz itself is checked by a test)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(f"{base_url}/healthz", timeout=5)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    assert BIN.exists(), f"countersign binary not found at {BIN} (set COUNTERSIGN_BIN)"
    data_dir = tmp_path_factory.mktemp("countersign-data")
    key = create_key("compat", data_dir)
    other_key = create_key("compat-other", data_dir)
    assert key != other_key

    stderr_path = data_dir.parent / "countersign-serve.stderr.log"
    stderr_file = open(stderr_path, "w")
    twilio = FakeTwilio()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        env={**os.environ, "COUNTERSIGN_TWILIO_API_BASE": twilio.base},
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )

    lines: list[str] = []
    found: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = LISTEN_RE.search(line)
            if m:
                found.put(m.group(1))
        found.put("")  # EOF marker

    threading.Thread(target=drain, name="countersign-stdout", daemon=True).start()

    try:
        base_url = found.get(timeout=STARTUP_TIMEOUT)
    except queue.Empty:
        base_url = ""
    if not base_url:
        proc.kill()
        proc.wait()
        stderr_file.close()
        pytest.exit(
            "countersign serve did not print 'Listening on http://127.0.0.1:PORT'\n"
            f"stdout: {lines}\nstderr:\n{stderr_path.read_text()[-4000:]}",
            returncode=3,
        )

    try:
        _wait_until_reachable(base_url)
    except BaseException:
        proc.kill()
        proc.wait()
        stderr_file.close()
        raise

    srv = Server(
        base_url=base_url, key=key, other_key=other_key, data_dir=data_dir, proc=proc, stdout_lines=lines, twilio=twilio
    )

    saved = {k: os.environ.get(k) for k in ("HUMANLAYER_API_BASE", "HUMANLAYER_API_KEY", "HUMANLAYER_RUN_ID")}
    os.environ["HUMANLAYER_API_BASE"] = srv.api_base
    os.environ["HUMANLAYER_API_KEY"] = key
    os.environ.pop("HUMANLAYER_RUN_ID", None)

    yield srv

    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

    # A waiting agent (long poll) must not block a graceful shutdown, and gets an answer.
    probe: dict = {}
    probe_id = f"shutdown-probe-{uuid.uuid4().hex[:8]}"
    poller = None
    created = srv.post("/function_calls", json={"run_id": "r", "call_id": probe_id, "spec": {"fn": "f", "kwargs": {}}})
    if created.status_code in (200, 201):

        def long_poll() -> None:
            try:
                probe["resp"] = srv.get(f"/function_calls/{probe_id}", params={"wait": 60}, timeout=40)
            except BaseException as e:  # noqa: BLE001
                probe["error"] = e

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        time.sleep(0.5)

    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        stderr_file.close()
        pytest.fail(f"countersign serve did not exit within {SHUTDOWN_TIMEOUT}s of SIGTERM")
    stderr_file.close()
    if rc != 0:
        sys.stderr.write(stderr_path.read_text()[-4000:])
    assert rc == 0, f"countersign serve exited {rc} after SIGTERM (stderr in {stderr_path})"
    if poller is not None:
        poller.join(timeout=5)
        assert "error" not in probe, f"in-flight long poll was cut off by SIGTERM: {probe.get('error')!r}"
        resp = probe.get("resp")
        assert resp is not None and resp.status_code == 200, "in-flight long poll got no 200 during shutdown"
        assert resp.json()["status"]["approved"] is None


@pytest.fixture
def uid() -> str:
    """A short unique suffix so every test uses its own call ids."""
    return uuid.uuid4().hex[:10]
