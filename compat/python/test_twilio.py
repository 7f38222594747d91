"""Inbound SMS/WhatsApp webhooks signed the way Twilio signs them: the `twilio` package's own
`RequestValidator` computes `X-Twilio-Signature`, and Countersign accepts exactly those posts (and
refuses one signed with another token or over other fields). A message the server sends goes
through a loopback fake of the REST API, and a signed reply decides the request."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import requests
from twilio.request_validator import RequestValidator

from conftest import BIN

from cs_helpers import TWILIO_SID as SID
TOKEN = "compat-twilio-token"
FROM = "+15550001111"


@pytest.fixture(scope="module")
def connected(server):
    fake = server.twilio
    proc = subprocess.run(
        [str(BIN), "twilio", "connect", "--project", "compat", "--account-sid", SID, "--auth-token-stdin",
         "--from", FROM, "--data-dir", str(server.data_dir)],
        input=TOKEN, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COUNTERSIGN_TWILIO_API_BASE": fake.base},
    )
    assert proc.returncode == 0, proc.stderr
    return fake


def post(server, params: dict[str, str], signature: str | None) -> requests.Response:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    return requests.post(f"{server.base_url}/twilio/inbound", data=params, headers=headers, timeout=10)


def message(params: dict[str, str]) -> dict[str, str]:
    return {"ToCountry": "US", "NumMedia": "0", "To": FROM, "MessageSid": f"SM{time.time_ns():032x}", **params}


def test_posts_signed_by_twilios_request_validator_are_accepted_and_others_refused(server, connected):
    url = f"{server.base_url}/twilio/inbound"
    params = message({"From": "+15557770000", "Body": "HELP"})
    good = RequestValidator(TOKEN).compute_signature(url, params)
    resp = post(server, params, good)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/xml")
    assert "<Message>Countersign approvals" in resp.text

    other = RequestValidator("another-token").compute_signature(url, params)
    assert post(server, message({"From": "+15557770000", "Body": "HELP"}), other).status_code == 403
    assert post(server, message({"From": "+15557770000", "Body": "HELP"}), None).status_code == 403
    tampered = {**params, "Body": "YES"}
    resp = post(server, tampered, good)
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"


def test_a_signed_reply_approves_a_texted_request(server, connected, uid):
    phone = "+15557770001"
    call_id = f"tw-{uid}"
    created = server.post("/function_calls", json={"run_id": "r", "call_id": call_id, "spec": {
        "fn": "refund", "kwargs": {"amount": 12}, "channel": {"sms": {"phone_number": phone}}}})
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 20
    while not any(m.get("To") == phone for m in connected.sent):
        assert time.monotonic() < deadline, f"nothing texted: {connected.sent}"
        time.sleep(0.1)
    sent = next(m for m in connected.sent if m.get("To") == phone)
    assert sent["From"] == FROM
    code = re.search(r"Reply YES (\d{4})", sent["Body"]).group(1)
    url = f"{server.base_url}/twilio/inbound"
    params = message({"From": phone, "Body": f"yes {code}"})
    resp = post(server, params, RequestValidator(TOKEN).compute_signature(url, params))
    assert resp.status_code == 200, resp.text
    assert f"Approved refund ({code})" in resp.text
    status = server.get(f"/function_calls/{call_id}").json()["status"]
    assert status["approved"] is True
    assert status["user_info"] == {"channel": "sms", "phone_number": phone}
