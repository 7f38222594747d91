"""The released sync `humanlayer.HumanLayer` (0.7.9) against a real countersign server."""

from __future__ import annotations

import pytest
from humanlayer import (
    ContactChannel,
    EmailContactChannel,
    EmailRecipient,
    Escalation,
    FunctionCall,
    FunctionCallSpec,
    FunctionCallStatus,
    HumanContactSpec,
    HumanContactStatus,
    HumanLayer,
    HumanLayerException,
    ResponseOption,
    SlackContactChannel,
)

from cs_helpers import assert_timestamp, assert_user_info, fast_sleep, human


def make_hl(uid: str, **kw) -> HumanLayer:
    hl = HumanLayer(run_id=f"compat-run-{uid}", genid=lambda prefix: f"{prefix}-{uid}", sleep=fast_sleep(), **kw)
    return hl


# --------------------------------------------------------------------------- require_approval


def test_require_approval_approved_runs_function(server, uid):
    hl = make_hl(uid)
    ran = []

    @hl.require_approval()
    def multiply(x: int, y: int) -> int:
        ran.append((x, y))
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": True, "comment": "go ahead"})
    assert multiply(x=2, y=5) == 10
    assert ran == [(2, 5)]
    responded = h.finish()
    assert responded["status"]["approved"] is True

    got = server.get(f"/function_calls/call-{uid}").json()
    assert got["run_id"] == f"compat-run-{uid}"
    assert got["call_id"] == f"call-{uid}"
    assert got["spec"]["fn"] == "multiply"
    assert got["spec"]["kwargs"] == {"x": 2, "y": 5}
    assert got["status"]["approved"] is True
    assert got["status"]["comment"] == "go ahead"
    assert_timestamp(got["status"]["requested_at"])
    assert_timestamp(got["status"]["responded_at"])
    assert_user_info(got["status"], server.key)


def test_require_approval_rejected_with_comment(server, uid):
    hl = make_hl(uid)
    ran = []

    @hl.require_approval()
    def multiply(x: int, y: int) -> int:
        ran.append((x, y))
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "comment": "too risky today"})
    assert multiply(x=3, y=4) == "User denied multiply with message: too risky today"
    assert ran == []
    h.finish()
    got = server.get(f"/function_calls/call-{uid}").json()
    assert got["status"]["approved"] is False
    assert got["status"]["comment"] == "too risky today"
    assert got["status"]["reject_option_name"] is None


def test_require_approval_rejected_without_comment_stores_empty_string(server, uid):
    hl = make_hl(uid)

    @hl.require_approval()
    def multiply(x: int, y: int) -> int:
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": False})
    # a null comment would make the SDK's as_completed() raise -> "Error fetching approval ..."
    assert multiply(x=3, y=4) == "User denied multiply with message: "
    h.finish()
    assert server.get(f"/function_calls/call-{uid}").json()["status"]["comment"] == ""


def test_require_approval_reject_option(server, uid):
    hl = make_hl(uid)
    too_big = ResponseOption(
        name="too_big",
        title="Too big",
        description="the numbers are too large",
        prompt_fill="please use numbers below 10",
        interactive=False,
    )
    other = ResponseOption(name="wrong_fn", title="Wrong function", prompt_fill="use add instead", interactive=True)

    @hl.require_approval(reject_options=[too_big, other])
    def multiply(x: int, y: int) -> int:
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "reject_option_name": "too_big"})
    assert multiply(x=30, y=40) == "User denied multiply with message: please use numbers below 10"
    h.finish()

    got = server.get(f"/function_calls/call-{uid}").json()
    assert got["status"]["approved"] is False
    assert got["status"]["reject_option_name"] == "too_big"
    assert got["status"]["comment"] == "please use numbers below 10"
    # reject options round-trip exactly as the SDK sent them
    assert got["spec"]["reject_options"] == [too_big.model_dump(), other.model_dump()]


def test_require_approval_interactive_reject_option_with_edited_comment(server, uid):
    hl = make_hl(uid)
    wrong_fn = ResponseOption(name="wrong_fn", title="Wrong function", prompt_fill="use add instead", interactive=True)

    @hl.require_approval(reject_options=[wrong_fn])
    def multiply(x: int, y: int) -> int:
        return x * y

    # the human picked the option and edited its text: the edited text is the comment
    body = {"approved": False, "reject_option_name": "wrong_fn", "comment": "use add, the user said plus"}
    h = human(server, "function_calls", f"call-{uid}", body)
    assert multiply(x=1, y=2) == "User denied multiply with message: use add, the user said plus"
    h.finish()
    got = server.get(f"/function_calls/call-{uid}").json()
    assert got["status"]["reject_option_name"] == "wrong_fn"
    assert got["status"]["comment"] == "use add, the user said plus"


def test_require_approval_slack_context_in_rejection(server, uid):
    channel = ContactChannel(
        slack=SlackContactChannel(
            channel_or_user_id="C0123ABCD",
            context_about_channel_or_user="the channel with the finance team",
            experimental_slack_blocks=True,
        )
    )
    hl = make_hl(uid, contact_channel=channel)

    @hl.require_approval()
    def multiply(x: int, y: int) -> int:
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "comment": "not in this quarter"})
    assert (
        multiply(x=6, y=7)
        == "User in the channel with the finance team denied multiply with message: not in this quarter"
    )
    h.finish()
    got = server.get(f"/function_calls/call-{uid}").json()
    # the SDK builds that text from the server-returned spec.channel: it must round-trip exactly
    assert got["spec"]["channel"] == channel.model_dump()


# --------------------------------------------------------------------------- human_as_tool


def test_human_as_tool_returns_answer(server, uid):
    hl = make_hl(uid)
    tool = hl.human_as_tool()
    assert tool.__name__ == "contact_human"

    h = human(server, "human_contacts", f"call-{uid}", {"response": "blue, definitely"})
    assert tool("which color should the button be?") == "blue, definitely"
    h.finish()

    got = server.get(f"/contact_requests/call-{uid}").json()
    assert got["run_id"] == f"compat-run-{uid}"
    assert got["spec"]["msg"] == "which color should the button be?"
    assert got["status"]["response"] == "blue, definitely"
    assert got["status"]["response_option_name"] is None
    assert_timestamp(got["status"]["requested_at"])
    assert_timestamp(got["status"]["responded_at"])


def test_human_as_tool_email_channel_with_response_options(server, uid):
    channel = ContactChannel(
        email=EmailContactChannel(
            address="a.b+c@example.com",
            context_about_user="the boss",
            additional_recipients=[EmailRecipient(address="x@y.z", field="cc")],
            subject="Re: hi",
        )
    )
    options = [
        ResponseOption(name="b", title="Blue", prompt_fill="blue"),
        ResponseOption(name="r", title="Red", prompt_fill="red", interactive=True),
    ]
    hl = make_hl(uid)
    tool = hl.human_as_tool(contact_channel=channel, response_options=options)
    assert tool.__name__ == "contact_human_via_email_a_b_c_example_com"

    h = human(
        server, "human_contacts", f"call-{uid}", {"response": "blue", "response_option_name": "b"}
    )
    assert tool("what color?", subject="ignored, the channel subject wins") == "blue"
    h.finish()

    got = server.get(f"/contact_requests/call-{uid}").json()
    assert got["spec"]["msg"] == "what color?"
    assert got["spec"]["subject"] == "Re: hi"
    assert got["spec"]["channel"] == channel.model_dump()
    assert got["spec"]["response_options"] == [o.model_dump() for o in options]
    assert got["status"]["response_option_name"] == "b"


# --------------------------------------------------------------------------- low-level function calls


def test_low_level_function_call_create_get_respond(server, uid):
    hl = make_hl(uid)
    call_id = f"tool_call_{uid}"  # e.g. an OpenAI tool_call.id
    spec = FunctionCallSpec(fn="transfer", kwargs={"amount": 125.5, "to": "bob", "memo": None})

    created = hl.create_function_call(spec, call_id=call_id)
    assert isinstance(created, FunctionCall)
    assert created.call_id == call_id
    assert created.run_id == f"compat-run-{uid}"
    assert created.spec == spec
    assert created.status is None or created.status.approved is None

    got = hl.get_function_call(call_id)
    assert got.call_id == call_id
    assert got.spec == spec
    assert got.status is not None and got.status.approved is None
    assert got.status.requested_at is not None
    assert got.status.responded_at is None

    decided = hl.respond_to_function_call(call_id, FunctionCallStatus(approved=True, comment="fine by me"))
    assert decided.call_id == call_id
    assert decided.status is not None
    assert decided.status.approved is True
    assert decided.status.comment == "fine by me"
    assert decided.status.responded_at is not None
    assert decided.status.requested_at == got.status.requested_at

    with pytest.raises(HumanLayerException) as exc:
        hl.respond_to_function_call(call_id, FunctionCallStatus(approved=False, comment="changed my mind"))
    assert "409" in str(exc.value)

    again = hl.get_function_call(call_id)
    assert again.status.approved is True
    assert again.status.comment == "fine by me"
    assert again.status.responded_at == decided.status.responded_at


def test_get_unknown_function_call_raises_humanlayer_exception(server, uid):
    hl = make_hl(uid)
    # the sync SDK calls resp.json() before raise_for_status: a non-JSON 404 would surface as JSONDecodeError
    with pytest.raises(HumanLayerException) as exc:
        hl.get_function_call(f"does-not-exist-{uid}")
    assert "404" in str(exc.value)
    with pytest.raises(HumanLayerException) as exc:
        hl.get_human_contact(f"does-not-exist-{uid}")
    assert "404" in str(exc.value)
    with pytest.raises(HumanLayerException) as exc:
        hl.respond_to_function_call(f"does-not-exist-{uid}", FunctionCallStatus(approved=True))
    assert "404" in str(exc.value)


def test_fetch_approval_completed(server, uid):
    hl = make_hl(uid)
    h = human(server, "function_calls", f"call-{uid}", {"approved": True, "comment": "ship it"})
    completed = hl.fetch_approval(FunctionCallSpec(fn="deploy", kwargs={"env": "prod", "replicas": 3}))
    h.finish()
    assert isinstance(completed, FunctionCall.Completed)
    assert completed.call.call_id == f"call-{uid}"
    assert completed.call.spec.fn == "deploy"
    assert completed.call.spec.kwargs == {"env": "prod", "replicas": 3}
    result = completed.as_completed()
    assert isinstance(result, FunctionCallStatus.Approved)
    assert result.approved is True
    assert result.comment == "ship it"


def test_fetch_approval_rejected(server, uid):
    hl = make_hl(uid)
    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "comment": "not on a friday"})
    completed = hl.fetch_approval(FunctionCallSpec(fn="deploy", kwargs={"env": "prod"}))
    h.finish()
    result = completed.as_completed()
    assert isinstance(result, FunctionCallStatus.Rejected)
    assert result.comment == "not on a friday"


# --------------------------------------------------------------------------- low-level human contacts


def test_low_level_human_contact_create_get_respond(server, uid):
    hl = make_hl(uid)
    call_id = f"contact-{uid}"
    spec = HumanContactSpec(msg="Is the build green?", subject="build status", state={"step": 3})

    created = hl.create_human_contact(spec, call_id=call_id)
    assert created.call_id == call_id
    assert created.spec == spec
    assert created.status is None or created.status.response is None

    got = hl.get_human_contact(call_id)
    assert got.spec == spec
    assert got.status is not None and got.status.response is None
    assert got.status.requested_at is not None

    # an empty answer is not an answer
    with pytest.raises(HumanLayerException) as exc:
        hl.respond_to_human_contact(call_id, HumanContactStatus(response=""))
    assert "400" in str(exc.value)
    assert hl.get_human_contact(call_id).status.response is None

    answered = hl.respond_to_human_contact(call_id, HumanContactStatus(response="yes, all green"))
    assert answered.status.response == "yes, all green"
    assert answered.status.responded_at is not None

    with pytest.raises(HumanLayerException) as exc:
        hl.respond_to_human_contact(call_id, HumanContactStatus(response="actually red"))
    assert "409" in str(exc.value)

    final = hl.get_human_contact(call_id)
    assert final.status.response == "yes, all green"
    assert final.spec.state == {"step": 3}


def test_fetch_human_response_completed(server, uid):
    hl = make_hl(uid)
    h = human(server, "human_contacts", f"call-{uid}", {"response": "42"})
    completed = hl.fetch_human_response(HumanContactSpec(msg="what is the answer?"))
    h.finish()
    assert completed.contact.call_id == f"call-{uid}"
    assert completed.as_completed() == "42"


# --------------------------------------------------------------------------- escalation


def test_escalate_email_function_call(server, uid):
    hl = make_hl(uid)
    call_id = f"esc-fc-{uid}"
    channel = ContactChannel(email=EmailContactChannel(address="approver@example.com", context_about_user="approver"))
    spec = FunctionCallSpec(fn="wire_money", kwargs={"amount": 1_000_000}, channel=channel)
    hl.create_function_call(spec, call_id=call_id)

    esc = Escalation(
        escalation_msg="urgent: please look at this",
        additional_recipients=[EmailRecipient(address="manager@example.com", field="to")],
    )
    returned = hl.escalate_email_function_call(call_id, esc)
    assert isinstance(returned, FunctionCall)
    assert returned.call_id == call_id
    assert returned.spec == spec  # spec is not changed by an escalation
    assert returned.status is None or returned.status.approved is None

    raw = server.get(f"/function_calls/{call_id}").json()
    escalations = raw.get("escalations")
    assert isinstance(escalations, list) and len(escalations) == 1, raw
    e = escalations[0]
    assert e["escalation_msg"] == "urgent: please look at this"
    assert e["additional_recipients"] == [{"address": "manager@example.com", "context_about_user": None, "field": "to"}]
    assert e.get("channel") is None
    assert_timestamp(e["escalated_at"])
    assert "escalated_by" in e and e["escalated_by"] is not None

    # progressive escalation with a channel override (a new primary address)
    esc2 = Escalation(
        escalation_msg="really urgent",
        channel=ContactChannel(email=EmailContactChannel(address="ceo@example.com", subject="URGENT")),
    )
    hl.escalate_email_function_call(call_id, esc2)
    raw = server.get(f"/function_calls/{call_id}").json()
    assert [x["escalation_msg"] for x in raw["escalations"]] == ["urgent: please look at this", "really urgent"]
    assert raw["escalations"][1]["channel"] == esc2.channel.model_dump()
    assert raw["spec"]["channel"] == channel.model_dump()

    # still pending and answerable; escalating a completed request is a conflict
    hl.respond_to_function_call(call_id, FunctionCallStatus(approved=False, comment="no"))
    with pytest.raises(HumanLayerException) as exc:
        hl.escalate_email_function_call(call_id, Escalation(escalation_msg="too late"))
    assert "409" in str(exc.value)
    assert len(server.get(f"/function_calls/{call_id}").json()["escalations"]) == 2


def test_escalate_email_function_call_without_any_email_is_400(server, uid):
    hl = make_hl(uid)
    call_id = f"esc-fc-noemail-{uid}"
    slack = ContactChannel(slack=SlackContactChannel(channel_or_user_id="C1"))
    hl.create_function_call(FunctionCallSpec(fn="f", kwargs={}, channel=slack), call_id=call_id)
    with pytest.raises(HumanLayerException) as exc:
        hl.escalate_email_function_call(call_id, Escalation(escalation_msg="anyone?"))
    assert "400" in str(exc.value)
    # nothing recorded, still pending
    raw = server.get(f"/function_calls/{call_id}").json()
    assert not raw.get("escalations")
    assert raw["status"]["approved"] is None

    # additional_recipients alone are enough of an email recipient
    esc = Escalation(escalation_msg="cc someone", additional_recipients=[EmailRecipient(address="cc@example.com")])
    assert hl.escalate_email_function_call(call_id, esc).call_id == call_id
    assert len(server.get(f"/function_calls/{call_id}").json()["escalations"]) == 1

    # creating without a channel and escalating with one is explicitly supported
    call_id2 = f"esc-fc-later-{uid}"
    hl.create_function_call(FunctionCallSpec(fn="f", kwargs={}), call_id=call_id2)
    esc = Escalation(escalation_msg="please", channel=ContactChannel(email=EmailContactChannel(address="late@example.com")))
    assert hl.escalate_email_function_call(call_id2, esc).call_id == call_id2
    assert len(server.get(f"/function_calls/{call_id2}").json()["escalations"]) == 1


def test_escalate_email_human_contact(server, uid):
    hl = make_hl(uid)
    call_id = f"esc-hc-{uid}"
    spec = HumanContactSpec(
        msg="need a decision",
        channel=ContactChannel(email=EmailContactChannel(address="lead@example.com")),
    )
    hl.create_human_contact(spec, call_id=call_id)

    esc = Escalation(
        escalation_msg="escalating",
        additional_recipients=[EmailRecipient(address="vp@example.com", context_about_user="the VP", field="cc")],
    )
    returned = hl.escalate_email_human_contact(call_id, esc)
    assert returned.call_id == call_id
    assert returned.spec == spec
    assert returned.status is None or returned.status.response is None

    raw = server.get(f"/contact_requests/{call_id}").json()
    assert len(raw["escalations"]) == 1, raw
    e = raw["escalations"][0]
    assert e["escalation_msg"] == "escalating"
    assert e["additional_recipients"] == [{"address": "vp@example.com", "context_about_user": "the VP", "field": "cc"}]
    assert_timestamp(e["escalated_at"])
    assert "escalated_by" in e and e["escalated_by"] is not None

    hl.respond_to_human_contact(call_id, HumanContactStatus(response="done"))
    with pytest.raises(HumanLayerException) as exc:
        hl.escalate_email_human_contact(call_id, Escalation(escalation_msg="too late"))
    assert "409" in str(exc.value)

    # no email anywhere -> 400
    call_id2 = f"esc-hc-noemail-{uid}"
    hl.create_human_contact(HumanContactSpec(msg="hello?"), call_id=call_id2)
    with pytest.raises(HumanLayerException) as exc:
        hl.escalate_email_human_contact(call_id2, Escalation(escalation_msg="anyone?"))
    assert "400" in str(exc.value)


# --------------------------------------------------------------------------- state


def big_state() -> dict:
    return {
        "numbers": list(range(100_000)),
        "nested": {
            "a": {"b": [1, -2, 2.5, 0.1, "x", None, True, False, {"deep": "value"}]},
            "empty_obj": {},
            "empty_list": [],
        },
        "unicode": "h\u00e9llo \u2713 \u65e5\u672c \U0001f600",
        "big_int": 2**62,
        "quote\"key": "line1\nline2\ttab \\ backslash",
    }


def test_large_state_round_trips_function_call(server, uid):
    hl = make_hl(uid)
    state = big_state()
    call_id = f"state-fc-{uid}"
    spec = FunctionCallSpec(fn="summarize", kwargs={"doc": "x" * 1000}, state=state)
    created = hl.create_function_call(spec, call_id=call_id)
    assert created.spec.state == state
    got = hl.get_function_call(call_id)
    assert got.spec.state == state
    assert got.spec.kwargs == {"doc": "x" * 1000}
    # and it survives the decision
    decided = hl.respond_to_function_call(call_id, FunctionCallStatus(approved=True))
    assert decided.spec.state == state
    assert server.get(f"/function_calls/{call_id}").json()["spec"]["state"] == state


def test_integers_beyond_64_bits_round_trip(server, uid):
    """Python's json sends arbitrary-size ints; kwargs and the opaque state must come back unchanged
    (not converted to lossy floats)."""
    hl = make_hl(uid)
    call_id = f"bigint-{uid}"
    kwargs = {"id": 2**64 + 1, "neg": -(2**63) - 1}
    state = {"big": 10**30 + 7, "list": [2**65 + 3, 1]}
    hl.create_function_call(FunctionCallSpec(fn="f", kwargs=kwargs, state=state), call_id=call_id)
    got = hl.get_function_call(call_id)
    assert got.spec.kwargs == kwargs
    assert got.spec.state == state


def test_large_state_round_trips_human_contact(server, uid):
    hl = make_hl(uid)
    state = big_state()
    call_id = f"state-hc-{uid}"
    created = hl.create_human_contact(HumanContactSpec(msg="state?", state=state), call_id=call_id)
    assert created.spec.state == state
    assert hl.get_human_contact(call_id).spec.state == state


# --------------------------------------------------------------------------- concurrency


def test_concurrent_approvals(server, uid):
    """Several agents waiting at once, decided in reverse order; each gets its own decision."""
    from concurrent.futures import ThreadPoolExecutor

    n = 6

    def agent(i: int):
        hl = HumanLayer(run_id=f"conc-{uid}", genid=lambda p: f"{p}-{uid}-{i}", sleep=fast_sleep())

        @hl.require_approval()
        def act(i: int) -> str:
            return f"done {i}"

        return act(i=i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(agent, i) for i in range(n)]
        humans = [
            human(
                server,
                "function_calls",
                f"call-{uid}-{i}",
                {"approved": True} if i % 2 == 0 else {"approved": False, "comment": f"no {i}"},
                delay=0.05 * (n - i),
            )
            for i in range(n)
        ]
        results = [f.result(timeout=60) for f in futures]
    for h in humans:
        h.finish()
    assert results == [f"done {i}" if i % 2 == 0 else f"User denied act with message: no {i}" for i in range(n)]
