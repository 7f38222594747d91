"""Helpers shared by the compatibility tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    key: str = field(repr=False)  # key of project "compat"
    other_key: str = field(repr=False)  # key of project "compat-other" (cross-project isolation)
    data_dir: Path = field(repr=False)
    proc: subprocess.Popen = field(repr=False)
    stdout_lines: list[str] = field(default_factory=list, repr=False)
    twilio: Any = field(default=None, repr=False)  # the FakeTwilio the server texts through

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/humanlayer/v1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    # --- raw HTTP helpers (the "human" side and protocol checks) -------------
    def get(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.get(f"{self.api_base}{path}", headers=self.headers(key), **kw)

    def post(self, path: str, json: Any = None, key: str | None = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.post(f"{self.api_base}{path}", json=json, headers=self.headers(key), **kw)


class PollBudgetExceeded(RuntimeError):
    pass


def fast_sleep(max_polls: int = 200, interval: float = 0.1):
    """A `sleep=` replacement for HumanLayer: 0.1 s instead of 3 s, and it gives up
    (raises) after `max_polls` polls so a server that never completes cannot hang the suite."""
    n = {"polls": 0}

    def sleep(_seconds: float) -> None:
        n["polls"] += 1
        if n["polls"] > max_polls:
            raise PollBudgetExceeded(f"still not completed after {max_polls} polls")
        time.sleep(interval)

    sleep.polls = n  # type: ignore[attr-defined]
    return sleep


def fast_async_sleep(max_polls: int = 200, interval: float = 0.1):
    n = {"polls": 0}

    async def sleep(_seconds: float) -> None:
        n["polls"] += 1
        if n["polls"] > max_polls:
            raise PollBudgetExceeded(f"still not completed after {max_polls} polls")
        await asyncio.sleep(interval)

    return sleep


class Human(threading.Thread):
    """Plays the human: waits until the request exists, then POSTs the decision
    through the agent-side respond endpoint (E3 / E7) with raw `requests`."""

    def __init__(self, srv: Server, kind: str, call_id: str, body: dict, delay: float = 0.2):
        super().__init__(daemon=True, name=f"human-{call_id}")
        assert kind in ("function_calls", "human_contacts")
        self.srv = srv
        self.kind = kind
        self.call_id = call_id
        self.body = body
        self.delay = delay
        self.response: requests.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            get_path = (
                f"/function_calls/{self.call_id}"
                if self.kind == "function_calls"
                else f"/contact_requests/{self.call_id}"
            )
            deadline = time.monotonic() + 15
            while True:
                r = self.srv.get(get_path)
                if r.status_code == 200:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{get_path} never appeared: {r.status_code} {r.text}")
                time.sleep(0.05)
            time.sleep(self.delay)
            self.response = self.srv.post(f"/agent/{self.kind}/{self.call_id}/respond", json=self.body)
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def finish(self) -> dict:
        """Join and assert that the respond call succeeded; return its JSON."""
        self.join(timeout=30)
        assert not self.is_alive(), "human thread did not finish"
        if self.error is not None:
            raise self.error
        assert self.response is not None
        assert self.response.status_code == 200, (
            f"respond to {self.call_id} -> {self.response.status_code} {self.response.text}"
        )
        assert self.response.headers.get("content-type", "").startswith("application/json")
        return self.response.json()


def human(srv: Server, kind: str, call_id: str, body: dict, delay: float = 0.2) -> Human:
    h = Human(srv, kind, call_id, body, delay)
    h.start()
    return h


def assert_json_error(resp: requests.Response, status: int) -> dict:
    """Every error must be JSON {"error": {"code": str, "message": str}} with an application/json content type."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/json", f"content-type {ctype!r} for {resp.status_code}"
    body = resp.json()
    assert isinstance(body, dict), body
    err = body.get("error")
    assert isinstance(err, dict), f"no error object in {body}"
    assert isinstance(err.get("code"), str) and err["code"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    return body


def assert_user_info(status: dict, key: str) -> None:
    """A decided request records who decided it: {"channel": "api", "api_key": "<prefix of the key>"}."""
    info = status.get("user_info")
    assert isinstance(info, dict), f"status.user_info missing/not an object: {status}"
    assert info.get("channel") == "api", info
    shown = info.get("api_key")
    assert isinstance(shown, str) and shown, info
    # it identifies the key (a prefix of it) but does not have to be the whole secret
    assert key.startswith(shown.rstrip(".*")), f"user_info.api_key {shown!r} does not identify key {key[:6]}..."


def assert_timestamp(value: Any) -> None:
    """RFC3339 / ISO-8601 timestamp string that Python can parse."""
    from datetime import datetime

    assert isinstance(value, str) and value, f"not a timestamp: {value!r}"
    datetime.fromisoformat(value.replace("Z", "+00:00"))


TWILIO_SID = "AC" + "0123456789abcdef" * 2


class FakeTwilio:
    """A loopback fake of Twilio's REST API: answers the account check and records Messages.json
    posts (the session's server sends its texts here: COUNTERSIGN_TWILIO_API_BASE)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        sent = self.sent

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self._answer(200, {"sid": TWILIO_SID, "status": "active"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                sent.append({k: v[0] for k, v in urllib.parse.parse_qs(body).items()})
                self._answer(201, {"sid": f"SM{len(sent):032x}", "status": "queued"})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
