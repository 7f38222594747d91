"""Webhooks as receivers built on the released SDK see them: every delivery verifies with the
`standardwebhooks` package, v1beta2 bodies parse as the SDK's `models_agent_webhook` models, legacy
bodies as its bare `FunctionCall` / `HumanContact`, and `state` round-trips."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from humanlayer import FunctionCall, FunctionCallSpec, HumanContact, HumanContactSpec, HumanLayer
from humanlayer.core.models_agent_webhook import V1Beta2FunctionCallCompleted, V1Beta2HumanContactCompleted
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cs_helpers import fast_sleep


class Receiver:
    """A loopback HTTP server that queues every POST (headers, body) and answers 200."""

    def __init__(self) -> None:
        self.got: "queue.Queue[tuple[dict[str, str], bytes]]" = queue.Queue()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                got.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}')

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def next_for(self, call_id: str, timeout: float = 10.0) -> tuple[dict[str, str], bytes]:
        """The next delivery about `call_id` (other tests share the project)."""
        while True:
            headers, body = self.got.get(timeout=timeout)
            if call_id.encode() in body:
                return headers, body

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def add_endpoint(server, url: str, **body) -> dict:
    resp = server.post("/webhooks", json={"url": url, **body})
    assert resp.status_code == 201, resp.text
    endpoint = resp.json()
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


def remove_endpoint(server, endpoint: dict) -> None:
    import requests

    resp = requests.delete(f"{server.api_base}/webhooks/{endpoint['id']}", headers=server.headers(), timeout=10)
    assert resp.status_code == 204, resp.text


def test_v1beta2_function_call_completed_verifies_and_parses(server, uid, receiver):
    endpoint = add_endpoint(server, receiver.url)
    try:
        hl = HumanLayer(run_id=f"hooks-{uid}", sleep=fast_sleep())
        state = {"thread": [{"role": "user", "content": "refund 120"}], "big": 123456789012345678901234567890}
        call = hl.create_function_call(
            spec=FunctionCallSpec(fn="refund", kwargs={"amount": 120}, state=state), call_id=f"hook-{uid}"
        )
        resp = server.post(f"/agent/function_calls/{call.call_id}/respond", json={"approved": False, "comment": "no"})
        assert resp.status_code == 200, resp.text

        headers, body = receiver.next_for(call.call_id)
        payload = Webhook(endpoint["secret"]).verify(body, headers)
        assert payload["type"] == "function_call.completed"
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(body, headers)

        event = V1Beta2FunctionCallCompleted.model_validate_json(body)
        assert event.type == "function_call.completed"
        assert event.is_test is False
        assert event.event.call_id == call.call_id
        assert event.event.spec.fn == "refund"
        assert event.event.spec.state == state
        assert event.event.status is not None and event.event.status.approved is False
        assert event.event.status.comment == "no"
        # The big integer arrives as sent, not as a float.
        assert b"123456789012345678901234567890" in body
    finally:
        remove_endpoint(server, endpoint)


def test_v1beta2_human_contact_completed_and_legacy_bodies(server, uid, receiver):
    v1 = add_endpoint(server, receiver.url)
    legacy_receiver = Receiver()
    legacy = add_endpoint(server, legacy_receiver.url, format="legacy", events=["function_call.completed", "human_contact.completed"])
    try:
        hl = HumanLayer(run_id=f"hooks-{uid}", sleep=fast_sleep())
        contact = hl.create_human_contact(
            spec=HumanContactSpec(msg="which region?", state={"step": 3}), call_id=f"ask-{uid}"
        )
        resp = server.post(f"/agent/human_contacts/{contact.call_id}/respond", json={"response": "eu-west-1"})
        assert resp.status_code == 200, resp.text

        headers, body = receiver.next_for(contact.call_id)
        Webhook(v1["secret"]).verify(body, headers)
        event = V1Beta2HumanContactCompleted.model_validate_json(body)
        assert event.type == "human_contact.completed"
        assert event.event.spec.msg == "which region?"
        assert event.event.spec.state == {"step": 3}
        assert event.event.status is not None and event.event.status.response == "eu-west-1"

        headers, body = legacy_receiver.next_for(contact.call_id)
        Webhook(legacy["secret"]).verify(body, headers)
        bare = HumanContact.model_validate_json(body)
        assert bare.call_id == contact.call_id and bare.status.response == "eu-west-1"
        assert "type" not in json.loads(body)

        call = hl.create_function_call(spec=FunctionCallSpec(fn="deploy", kwargs={}), call_id=f"fc-{uid}")
        server.post(f"/agent/function_calls/{call.call_id}/respond", json={"approved": True})
        headers, body = legacy_receiver.next_for(call.call_id)
        Webhook(legacy["secret"]).verify(body, headers)
        assert FunctionCall.model_validate_json(body).status.approved is True
    finally:
        remove_endpoint(server, v1)
        remove_endpoint(server, legacy)
        legacy_receiver.close()
