"""Wire-level checks with raw `requests`: idempotency, auth, errors, URL quirks, pending lists, long poll."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from humanlayer import FunctionCallSpec, HumanLayer

from cs_helpers import assert_json_error, assert_timestamp, assert_user_info, fast_sleep, human


def fc_body(call_id: str, **spec_over) -> dict:
    spec = {"fn": "multiply", "kwargs": {"x": 2, "y": 5}}
    spec.update(spec_over)
    return {"run_id": "raw-run", "call_id": call_id, "spec": spec}


def hc_body(call_id: str, msg: str = "hello?") -> dict:
    return {"run_id": "raw-run", "call_id": call_id, "spec": {"msg": msg}}


def assert_json_ok(resp: requests.Response, status: int = 200) -> dict:
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/json", ctype
    return resp.json()


# --------------------------------------------------------------------------- create / idempotency


def test_create_returns_pending_object(server, uid):
    body = fc_body(f"raw-{uid}", state={"k": [1, 2, 3]})
    # a client-sent status must be ignored
    body["status"] = {"approved": True, "comment": "forged"}
    created = assert_json_ok(server.post("/function_calls", json=body))
    assert created["run_id"] == "raw-run"
    assert created["call_id"] == f"raw-{uid}"
    assert created["spec"]["fn"] == "multiply"
    assert created["spec"]["kwargs"] == {"x": 2, "y": 5}
    assert created["spec"]["state"] == {"k": [1, 2, 3]}
    status = created.get("status")
    assert status is None or status["approved"] is None
    got = assert_json_ok(server.get(f"/function_calls/raw-{uid}"))
    assert got["status"]["approved"] is None
    assert got["status"]["comment"] is None
    assert got["status"]["responded_at"] is None
    assert_timestamp(got["status"]["requested_at"])


def test_create_ignores_unknown_fields(server, uid):
    body = fc_body(f"raw-unknown-{uid}")
    body["user_info"] = {"who": "third party"}
    body["slack_context"] = {"team": "T1"}
    body["spec"]["some_future_field"] = 1
    created = assert_json_ok(server.post("/function_calls", json=body))
    assert created["call_id"] == f"raw-unknown-{uid}"


def test_idempotent_create_function_call(server, uid):
    body = fc_body(f"idem-{uid}")
    first = server.post("/function_calls", json=body)
    assert first.status_code in (200, 201), first.text
    first_json = first.json()

    again = assert_json_ok(server.post("/function_calls", json=body), 200)
    assert again == first_json

    different = fc_body(f"idem-{uid}", kwargs={"x": 2, "y": 6})
    assert_json_error(server.post("/function_calls", json=different), 409)
    assert assert_json_ok(server.get(f"/function_calls/idem-{uid}")) == first_json


def test_idempotent_create_human_contact(server, uid):
    body = hc_body(f"idem-hc-{uid}", "first question")
    first = server.post("/contact_requests", json=body)
    assert first.status_code in (200, 201), first.text
    first_json = first.json()
    assert assert_json_ok(server.post("/contact_requests", json=body), 200) == first_json
    assert_json_error(server.post("/contact_requests", json=hc_body(f"idem-hc-{uid}", "other question")), 409)
    assert assert_json_ok(server.get(f"/contact_requests/idem-hc-{uid}")) == first_json


def test_create_after_decision_with_same_body_returns_stored_decision(server, uid):
    body = fc_body(f"idem-done-{uid}")
    assert server.post("/function_calls", json=body).status_code in (200, 201)
    assert_json_ok(server.post(f"/agent/function_calls/idem-done-{uid}/respond", json={"approved": True, "comment": "ok"}))
    again = assert_json_ok(server.post("/function_calls", json=body), 200)
    assert again["status"]["approved"] is True
    assert again["status"]["comment"] == "ok"


def test_human_contacts_alias(server, uid):
    created = server.post("/human_contacts", json=hc_body(f"alias-{uid}", "via alias"))
    assert created.status_code in (200, 201), created.text
    via_canonical = assert_json_ok(server.get(f"/contact_requests/alias-{uid}"))
    via_alias = assert_json_ok(server.get(f"/human_contacts/alias-{uid}"))
    assert via_canonical == via_alias
    assert via_alias["spec"]["msg"] == "via alias"
    assert via_alias["status"]["response"] is None


def test_same_call_id_in_two_projects(server, uid):
    """call_id is unique per project, not globally."""
    cid = f"shared-{uid}"
    a = server.post("/function_calls", json=fc_body(cid, kwargs={"p": "a"}))
    b = server.post("/function_calls", json=fc_body(cid, kwargs={"p": "b"}), key=server.other_key)
    assert a.status_code in (200, 201), a.text
    assert b.status_code in (200, 201), b.text
    assert server.get(f"/function_calls/{cid}").json()["spec"]["kwargs"] == {"p": "a"}
    assert server.get(f"/function_calls/{cid}", key=server.other_key).json()["spec"]["kwargs"] == {"p": "b"}
    assert_json_ok(server.post(f"/agent/function_calls/{cid}/respond", json={"approved": True}, key=server.other_key))
    assert server.get(f"/function_calls/{cid}").json()["status"]["approved"] is None


def test_multi_megabyte_body_accepted(server, uid):
    """The reference asks for bodies of at least several MB (state is opaque and may be large)."""
    state = {"blob": "x" * 4_000_000, "n": list(range(50_000))}
    created = server.post("/function_calls", json=fc_body(f"huge-{uid}", state=state))
    assert created.status_code in (200, 201), created.text[:500]
    assert server.get(f"/function_calls/huge-{uid}").json()["spec"]["state"] == state


def test_contact_response_option_without_text_uses_prompt_fill(server, uid):
    cid = f"hc-opt-{uid}"
    body = hc_body(cid)
    body["spec"]["response_options"] = [{"name": "b", "title": "Blue", "prompt_fill": "blue please"}]
    assert server.post("/contact_requests", json=body).status_code in (200, 201)
    answered = assert_json_ok(server.post(f"/agent/human_contacts/{cid}/respond", json={"response_option_name": "b"}))
    assert answered["status"]["response"] == "blue please"
    assert answered["status"]["response_option_name"] == "b"


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/function_calls/whatever"),
        ("POST", "/function_calls"),
        ("GET", "/contact_requests/whatever"),
        ("POST", "/contact_requests"),
        ("POST", "/agent/function_calls/whatever/respond"),
        ("POST", "/agent/human_contacts/whatever/respond"),
        ("GET", "/agent/function_calls/pending"),
        ("GET", "/agent/human_contacts/pending"),
    ],
)
def test_auth_required(server, method, path):
    url = f"{server.api_base}{path}"
    body = fc_body("auth-x") if method == "POST" else None
    no_key = requests.request(method, url, json=body, timeout=10)
    assert_json_error(no_key, 401)
    wrong = requests.request(method, url, json=body, headers={"Authorization": "Bearer cs_not_a_real_key"}, timeout=10)
    assert_json_error(wrong, 401)
    not_bearer = requests.request(method, url, json=body, headers={"Authorization": server.key}, timeout=10)
    assert_json_error(not_bearer, 401)


def test_unauthenticated_create_does_not_store(server, uid):
    r = requests.post(f"{server.api_base}/function_calls", json=fc_body(f"noauth-{uid}"), timeout=10)
    assert_json_error(r, 401)
    assert_json_error(server.get(f"/function_calls/noauth-{uid}"), 404)


# --------------------------------------------------------------------------- 404 / project isolation


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/function_calls/nope-{uid}", None),
        ("GET", "/contact_requests/nope-{uid}", None),
        ("GET", "/human_contacts/nope-{uid}", None),
        ("POST", "/agent/function_calls/nope-{uid}/respond", {"approved": True}),
        ("POST", "/agent/human_contacts/nope-{uid}/respond", {"response": "x"}),
        ("POST", "/agent/function_calls/nope-{uid}/escalate_email", {"escalation_msg": "m"}),
        ("POST", "/agent/human_contacts/nope-{uid}/escalate_email", {"escalation_msg": "m"}),
    ],
)
def test_unknown_id_is_json_404(server, uid, method, path, body):
    r = requests.request(method, f"{server.api_base}{path.format(uid=uid)}", json=body, headers=server.headers(), timeout=10)
    assert_json_error(r, 404)


def test_other_projects_objects_are_invisible(server, uid):
    assert server.post("/function_calls", json=fc_body(f"mine-{uid}")).status_code in (200, 201)
    assert server.post("/contact_requests", json=hc_body(f"mine-hc-{uid}")).status_code in (200, 201)
    other = server.other_key
    assert_json_error(server.get(f"/function_calls/mine-{uid}", key=other), 404)
    assert_json_error(server.get(f"/contact_requests/mine-hc-{uid}", key=other), 404)
    assert_json_error(server.post(f"/agent/function_calls/mine-{uid}/respond", json={"approved": True}, key=other), 404)
    assert_json_error(server.post(f"/agent/human_contacts/mine-hc-{uid}/respond", json={"response": "x"}, key=other), 404)
    assert_json_error(
        server.post(f"/agent/function_calls/mine-{uid}/escalate_email", json={"escalation_msg": "m"}, key=other), 404
    )
    # still pending for the owner
    assert server.get(f"/function_calls/mine-{uid}").json()["status"]["approved"] is None
    pending_other = server.get("/agent/function_calls/pending", key=other).json()
    assert f"mine-{uid}" not in [i["call_id"] for i in pending_other["items"]]


# --------------------------------------------------------------------------- respond semantics


def test_respond_rules(server, uid):
    cid = f"rules-{uid}"
    assert server.post("/function_calls", json=fc_body(cid)).status_code in (200, 201)
    # approved missing / null -> 400, nothing recorded
    assert_json_error(server.post(f"/agent/function_calls/{cid}/respond", json={"comment": "hm"}), 400)
    assert_json_error(server.post(f"/agent/function_calls/{cid}/respond", json={"approved": None}), 400)
    assert server.get(f"/function_calls/{cid}").json()["status"]["approved"] is None

    # Python-style body with every field (client timestamps are ignored)
    body = {
        "requested_at": None,
        "responded_at": None,
        "approved": True,
        "comment": "lgtm",
        "reject_option_name": None,
        "slack_message_ts": None,
    }
    decided = assert_json_ok(server.post(f"/agent/function_calls/{cid}/respond", json=body))
    assert decided["call_id"] == cid
    assert decided["status"]["approved"] is True
    assert decided["status"]["comment"] == "lgtm"
    assert_timestamp(decided["status"]["responded_at"])
    assert_user_info(decided["status"], server.key)

    conflict = assert_json_error(server.post(f"/agent/function_calls/{cid}/respond", json={"approved": False, "comment": "x"}), 409)
    assert conflict["error"]["code"]
    got = server.get(f"/function_calls/{cid}").json()
    assert got["status"]["approved"] is True and got["status"]["comment"] == "lgtm"


def test_contact_respond_rules(server, uid):
    cid = f"hc-rules-{uid}"
    assert server.post("/contact_requests", json=hc_body(cid)).status_code in (200, 201)
    assert_json_error(server.post(f"/agent/human_contacts/{cid}/respond", json={"response": ""}), 400)
    assert_json_error(server.post(f"/agent/human_contacts/{cid}/respond", json={}), 400)
    assert server.get(f"/contact_requests/{cid}").json()["status"]["response"] is None
    answered = assert_json_ok(server.post(f"/agent/human_contacts/{cid}/respond", json={"response": "r"}))
    assert answered["status"]["response"] == "r"
    assert_timestamp(answered["status"]["responded_at"])
    assert_json_error(server.post(f"/agent/human_contacts/{cid}/respond", json={"response": "again"}), 409)


# --------------------------------------------------------------------------- URL quirks


def test_trailing_slash_base_works_with_sdk(server, uid):
    hl = HumanLayer(
        run_id=f"slash-{uid}",
        genid=lambda p: f"{p}-{uid}",
        sleep=fast_sleep(),
        api_base_url=server.api_base + "/",  # the SDK then requests ...//function_calls
    )

    @hl.require_approval()
    def multiply(x: int, y: int) -> int:
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": True})
    assert multiply(x=9, y=9) == 81
    h.finish()

    created = hl.create_function_call(FunctionCallSpec(fn="g", kwargs={}), call_id=f"slash-ll-{uid}")
    assert created.call_id == f"slash-ll-{uid}"
    assert hl.get_function_call(f"slash-ll-{uid}").spec.fn == "g"

    tool = hl.human_as_tool()
    h = human(server, "human_contacts", f"call-{uid}", {"response": "slashes are fine"})
    assert tool("ok?") == "slashes are fine"
    h.finish()


def test_double_slash_raw(server, uid):
    r = requests.post(f"{server.api_base}//function_calls", json=fc_body(f"dbl-{uid}"), headers=server.headers(), timeout=10)
    assert r.status_code in (200, 201), r.text
    got = requests.get(f"{server.api_base}//function_calls/dbl-{uid}", headers=server.headers(), timeout=10)
    assert assert_json_ok(got)["call_id"] == f"dbl-{uid}"


# --------------------------------------------------------------------------- pending lists


def _all_pending(server, kind: str) -> tuple[list[dict], dict]:
    first = assert_json_ok(server.get(f"/agent/{kind}/pending"))
    for k in ("items", "total", "limit", "offset", "has_more"):
        assert k in first, f"pending list lacks {k!r}: {list(first)}"
    assert isinstance(first["items"], list)
    assert isinstance(first["total"], int) and isinstance(first["limit"], int) and isinstance(first["offset"], int)
    assert isinstance(first["has_more"], bool)
    assert first["offset"] == 0
    items = list(first["items"])
    page = first
    while page["has_more"]:
        page = assert_json_ok(server.get(f"/agent/{kind}/pending", params={"offset": len(items), "limit": page["limit"]}))
        assert page["items"], "has_more was true but the next page is empty"
        items.extend(page["items"])
    assert len(items) == first["total"]
    return items, first


def test_pending_function_calls(server, uid):
    pending_id, done_id = f"pend-{uid}", f"done-{uid}"
    assert server.post("/function_calls", json=fc_body(pending_id)).status_code in (200, 201)
    assert server.post("/function_calls", json=fc_body(done_id)).status_code in (200, 201)
    assert_json_ok(server.post(f"/agent/function_calls/{done_id}/respond", json={"approved": False, "comment": "no"}))

    items, _ = _all_pending(server, "function_calls")
    ids = [i["call_id"] for i in items]
    assert pending_id in ids
    assert done_id not in ids
    mine = next(i for i in items if i["call_id"] == pending_id)
    assert mine["spec"]["fn"] == "multiply"
    assert mine["spec"]["kwargs"] == {"x": 2, "y": 5}
    assert all(i["status"] is None or i["status"]["approved"] is None for i in items)

    assert_json_ok(server.post(f"/agent/function_calls/{pending_id}/respond", json={"approved": True}))
    items, _ = _all_pending(server, "function_calls")
    assert pending_id not in [i["call_id"] for i in items]


def test_pending_pagination(server, uid):
    for i in range(3):
        assert server.post("/function_calls", json=fc_body(f"page-{uid}-{i}")).status_code in (200, 201)
    page = assert_json_ok(server.get("/agent/function_calls/pending", params={"limit": 1}))
    assert page["limit"] == 1
    assert len(page["items"]) == 1
    assert page["total"] >= 3
    assert page["has_more"] is True
    page2 = assert_json_ok(server.get("/agent/function_calls/pending", params={"limit": 1, "offset": 1}))
    assert page2["offset"] == 1
    assert len(page2["items"]) == 1
    assert page2["items"][0]["call_id"] != page["items"][0]["call_id"]
    last = assert_json_ok(server.get("/agent/function_calls/pending", params={"limit": 1, "offset": page["total"] - 1}))
    assert last["has_more"] is False


def test_pending_human_contacts(server, uid):
    pending_id, done_id = f"hc-pend-{uid}", f"hc-done-{uid}"
    assert server.post("/contact_requests", json=hc_body(pending_id, "still open")).status_code in (200, 201)
    assert server.post("/contact_requests", json=hc_body(done_id)).status_code in (200, 201)
    assert_json_ok(server.post(f"/agent/human_contacts/{done_id}/respond", json={"response": "answered"}))

    items, _ = _all_pending(server, "human_contacts")
    ids = [i["call_id"] for i in items]
    assert pending_id in ids
    assert done_id not in ids
    assert next(i for i in items if i["call_id"] == pending_id)["spec"]["msg"] == "still open"
    assert all(i["status"] is None or i["status"]["response"] is None for i in items)


# --------------------------------------------------------------------------- long poll


def test_long_poll_returns_when_decided(server, uid):
    cid = f"lp-{uid}"
    assert server.post("/function_calls", json=fc_body(cid)).status_code in (200, 201)

    def decide():
        time.sleep(0.5)
        server.post(f"/agent/function_calls/{cid}/respond", json={"approved": True, "comment": "lp"})

    t = threading.Thread(target=decide, daemon=True)
    t.start()
    start = time.monotonic()
    got = assert_json_ok(server.get(f"/function_calls/{cid}", params={"wait": 10}))
    elapsed = time.monotonic() - start
    t.join(5)
    assert got["status"]["approved"] is True
    assert got["status"]["comment"] == "lp"
    assert 0.3 <= elapsed < 5, f"long poll took {elapsed:.2f}s"


def test_long_poll_times_out_pending(server, uid):
    cid = f"lp-timeout-{uid}"
    assert server.post("/function_calls", json=fc_body(cid)).status_code in (200, 201)
    start = time.monotonic()
    got = assert_json_ok(server.get(f"/function_calls/{cid}", params={"wait": 1}))
    elapsed = time.monotonic() - start
    assert got["status"]["approved"] is None
    assert 0.8 <= elapsed < 4, f"wait=1 took {elapsed:.2f}s"
    # an already-decided call returns immediately
    server.post(f"/agent/function_calls/{cid}/respond", json={"approved": True})
    start = time.monotonic()
    assert assert_json_ok(server.get(f"/function_calls/{cid}", params={"wait": 30}))["status"]["approved"] is True
    assert time.monotonic() - start < 2


# --------------------------------------------------------------------------- misc


def test_healthz_and_unknown_route_are_json(server):
    r = requests.get(f"{server.base_url}/healthz", timeout=10)
    assert_json_ok(r)
    r = requests.get(f"{server.api_base}/definitely/not/a/route", headers=server.headers(), timeout=10)
    assert_json_error(r, 404)


def test_malformed_json_is_json_400(server):
    r = requests.post(
        f"{server.api_base}/function_calls",
        data=b"{not json",
        headers={**server.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code in (400, 422), r.text
    assert_json_error(r, r.status_code)
    # kwargs must be an object
    bad = fc_body("bad-kwargs")
    bad["spec"]["kwargs"] = None
    r = server.post("/function_calls", json=bad)
    assert r.status_code in (400, 422), r.text
    assert_json_error(r, r.status_code)
