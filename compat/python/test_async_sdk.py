"""The released `humanlayer.AsyncHumanLayer` (0.7.9, aiohttp) against a real countersign server.

aiohttp checks the Content-Type of every response (2xx included) before parsing JSON,
so these tests also pin `Content-Type: application/json` on all of them.
"""

from __future__ import annotations

import asyncio

import pytest
from humanlayer import (
    AsyncHumanLayer,
    FunctionCall,
    FunctionCallSpec,
    FunctionCallStatus,
    HumanContactSpec,
    HumanContactStatus,
    HumanLayerException,
)

from cs_helpers import fast_async_sleep, human


def make_hl(uid: str, **kw) -> AsyncHumanLayer:
    return AsyncHumanLayer(
        run_id=f"compat-async-{uid}", genid=lambda prefix: f"{prefix}-{uid}", sleep=fast_async_sleep(), **kw
    )


def test_async_require_approval_approved(server, uid):
    hl = make_hl(uid)
    ran = []

    @hl.require_approval()
    async def multiply(x: int, y: int) -> int:
        await asyncio.sleep(0)
        ran.append((x, y))
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": True})
    assert asyncio.run(multiply(x=7, y=6)) == 42
    h.finish()
    assert ran == [(7, 6)]
    got = server.get(f"/function_calls/call-{uid}").json()
    assert got["run_id"] == f"compat-async-{uid}"
    assert got["spec"]["fn"] == "multiply"
    assert got["spec"]["kwargs"] == {"x": 7, "y": 6}
    assert got["status"]["approved"] is True
    assert got["status"]["comment"] is None


def test_async_require_approval_rejected(server, uid):
    hl = make_hl(uid)
    ran = []

    @hl.require_approval()
    async def multiply(x: int, y: int) -> int:
        ran.append((x, y))
        return x * y

    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "comment": "nope"})
    assert asyncio.run(multiply(x=7, y=6)) == "User denied multiply with message: nope"
    h.finish()
    assert ran == []


def test_async_require_approval_sync_function(server, uid):
    hl = make_hl(uid)

    @hl.require_approval()
    def add(a: int, b: int) -> int:
        return a + b

    h = human(server, "function_calls", f"call-{uid}", {"approved": True, "comment": "ok"})
    assert asyncio.run(add(a=1, b=2)) == 3
    h.finish()


def test_async_human_as_tool(server, uid):
    hl = make_hl(uid)
    tool = hl.human_as_tool()
    h = human(server, "human_contacts", f"call-{uid}", {"response": "use postgres"})
    assert asyncio.run(tool("which database?")) == "use postgres"
    h.finish()
    got = server.get(f"/contact_requests/call-{uid}").json()
    assert got["spec"]["msg"] == "which database?"
    assert got["status"]["response"] == "use postgres"


def test_async_fetch_approval(server, uid):
    hl = make_hl(uid)
    h = human(server, "function_calls", f"call-{uid}", {"approved": False, "comment": "wait until monday"})
    completed = asyncio.run(hl.fetch_approval(FunctionCallSpec(fn="deploy", kwargs={"env": "staging"})))
    h.finish()
    assert isinstance(completed, FunctionCall.Completed)
    assert completed.call.call_id == f"call-{uid}"
    assert completed.call.spec.kwargs == {"env": "staging"}
    result = completed.as_completed()
    assert isinstance(result, FunctionCallStatus.Rejected)
    assert result.comment == "wait until monday"


def test_async_fetch_human_response(server, uid):
    hl = make_hl(uid)
    h = human(server, "human_contacts", f"call-{uid}", {"response": "tuesday"})
    completed = asyncio.run(hl.fetch_human_response(HumanContactSpec(msg="which day?")))
    h.finish()
    assert completed.as_completed() == "tuesday"


def test_async_low_level_and_errors(server, uid):
    hl = make_hl(uid)

    async def scenario():
        call_id = f"async-ll-{uid}"
        created = await hl.create_function_call(FunctionCallSpec(fn="f", kwargs={"a": 1}), call_id=call_id)
        assert created.call_id == call_id
        got = await hl.get_function_call(call_id)
        assert got.status is not None and got.status.approved is None
        decided = await hl.respond_to_function_call(call_id, FunctionCallStatus(approved=True, comment="y"))
        assert decided.status.approved is True and decided.status.comment == "y"
        # errors must be JSON with application/json, or aiohttp raises ContentTypeError instead
        with pytest.raises(HumanLayerException) as exc:
            await hl.respond_to_function_call(call_id, FunctionCallStatus(approved=False, comment="n"))
        assert "409" in str(exc.value)
        with pytest.raises(HumanLayerException) as exc:
            await hl.get_function_call(f"missing-{uid}")
        assert "404" in str(exc.value)

        contact_id = f"async-hc-{uid}"
        await hl.create_human_contact(HumanContactSpec(msg="hi?"), call_id=contact_id)
        with pytest.raises(HumanLayerException) as exc:
            await hl.respond_to_human_contact(contact_id, HumanContactStatus(response=""))
        assert "400" in str(exc.value)
        answered = await hl.respond_to_human_contact(contact_id, HumanContactStatus(response="hello"))
        assert answered.status.response == "hello"
        assert (await hl.get_human_contact(contact_id)).status.response == "hello"

    asyncio.run(scenario())
