"""The dashboards' WebSockets against daphne with a real WebSocket client: who may connect, and that a
storm of worker batches reaches the browser as a few bounded messages."""
import asyncio
import json
import threading
import time

import pytest
from channels.layers import get_channel_layer
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from proxyworker.messages import SESSIONS_GROUP, STATS_GROUP

pytestmark = [pytest.mark.xdist_group("dashboards"),
              pytest.mark.filterwarnings("ignore:valid_group_name is deprecated:DeprecationWarning")]


def run_async(coroutine_function):
    """Run it on an event loop of its own thread: Playwright's loop may already run in this one."""
    errors = []

    def target():
        try:
            asyncio.run(coroutine_function())
        except Exception as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


def ws_url(stack, path):
    return stack.url.replace("http://", "ws://") + path


def open_socket(stack, path, cookie=None, origin="own"):
    headers = {"Cookie": cookie} if cookie else {}
    return connect(ws_url(stack, path), origin=stack.url if origin == "own" else origin,
                   additional_headers=headers, open_timeout=5)


def frames(ws, seconds, until=None):
    """Every message received within `seconds` (or until `until(message)` is true)."""
    received = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            break
        received.append(message)
        if until and until(message):
            break
    return received


@pytest.mark.parametrize("path", ["/ws/live/overview/", "/ws/live/sessions/", "/ws/live/health/"])
def test_an_anonymous_user_is_closed_with_4401_before_any_data(stack, path):
    with open_socket(stack, path) as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1.evil.example"])
def test_a_foreign_origin_is_refused_at_the_handshake_even_with_a_valid_session(stack, session_cookie, origin):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(stack, "/ws/live/overview/", session_cookie, origin=origin)
    assert refused.value.response.status_code == 403


def test_a_missing_origin_is_refused(stack, session_cookie):
    with pytest.raises(InvalidStatus) as refused:
        open_socket(stack, "/ws/live/overview/", session_cookie, origin=None)
    assert refused.value.response.status_code == 403


def test_a_logged_in_user_gets_the_state_and_an_unknown_server_is_4404(stack, session_cookie):
    with open_socket(stack, "/ws/live/overview/", session_cookie) as ws:
        got = frames(ws, 5, until=lambda m: "state" in m)
    state = got[-1]["state"]
    assert [w["id"] for w in state["workers"]] == [stack.worker_id]
    assert state["listening"]["dash-horizon"] == [stack.worker_id]
    with open_socket(stack, "/ws/live/drain/999999/", session_cookie) as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4404


def session(n, server):
    return {"id": f"storm:{n}", "vs": "storm-vip", "port": 443, "protocol": "tcp", "client": f"10.9.{n // 250}.{n % 250}:5000",
            "client_key": f"10.9.{n // 250}.{n % 250}", "server": server, "server_address": "10.0.0.1:443",
            "opened_at": time.time(), "bytes_in": 0, "bytes_out": 0}


def test_a_storm_of_session_batches_reaches_the_browser_as_few_bounded_filtered_messages(stack, session_cookie):
    layer = get_channel_layer()
    batches, per_batch = 60, 100

    async def storm():
        for b in range(batches):
            opened = [session(b * per_batch + i, f"storm/s{i % 2}") for i in range(per_batch)]
            closed = [{"id": f"storm:{b * per_batch + i}", "bytes_in": 1, "bytes_out": 2, "closed_at": time.time()}
                      for i in range(0, per_batch, 4)]
            await layer.group_send(SESSIONS_GROUP, {"type": "sessions.batch", "worker": "storm", "opened": opened,
                                                    "closed": closed, "dropped": 0})

    with open_socket(stack, "/ws/live/sessions/?server=storm/s1", session_cookie) as ws:
        ws.send(json.dumps({"type": "watch", "connections": [], "persistence": []}))
        time.sleep(0.3)  # the consumer has joined the group once it answered the handshake; be generous
        started = time.monotonic()
        run_async(storm)
        got = [m for m in frames(ws, 3.0) if m["type"] == "sessions.update"]
        elapsed = time.monotonic() - started
    assert got, "no update at all"
    assert len(got) <= elapsed / 0.5 + 2, f"{len(got)} messages in {elapsed:.1f} s: not throttled"
    assert all(len(m["opened"]) <= 50 for m in got)
    assert all(s["server"] == "storm/s1" for m in got for s in m["opened"])  # the page's filter
    counted = sum(m["opened_count"] for m in got)
    assert counted > per_batch, "the counts should cover the whole storm, not one batch"
    assert sum(m["skipped"] for m in got) > 0  # matching rows beyond the cap are counted, not sent
    # a connection opened and closed within one flush is never shown
    shown = {s["id"] for m in got for s in m["opened"]}
    assert not any(int(i.split(":")[1]) % 4 == 0 for i in shown)


def test_the_overview_sums_rates_over_workers(stack, session_cookie):
    layer = get_channel_layer()
    now = time.time()

    def stats(worker, at, total, bytes_in):
        return {"type": "stats.batch", "worker": worker, "at": at, "servers": {},
                "services": {"rate-vip": {"active": 3, "total": total, "bytes_in": bytes_in, "bytes_out": 0,
                                          "refused": 0}}}

    async def send():
        for message in (stats("ra", now - 1, 0, 0), stats("rb", now - 1, 0, 0),
                        stats("ra", now, 100, 4000), stats("rb", now, 50, 1000)):
            await layer.group_send(STATS_GROUP, message)

    with open_socket(stack, "/ws/live/overview/", session_cookie) as ws:
        time.sleep(0.3)
        run_async(send)
        got = frames(ws, 4, until=lambda m: "rate-vip" in m.get("stats", {}).get("services", {})
                     and m["stats"]["services"]["rate-vip"]["conn_rate"] == 150)
    vip = got[-1]["stats"]["services"]["rate-vip"]
    assert vip == {"active": 6, "conn_rate": 150.0, "bytes_in_rate": 5000.0, "bytes_out_rate": 0.0,
                   "refused_rate": 0.0}
