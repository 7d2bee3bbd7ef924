"""The dashboards in a real Chromium against a real appliance: a client connects through a real proxy
worker, the overview and the sticky-sessions page show it live, a drain from the drain page ends with
"safe to take down" once the client has left, and the health timeline shows the drain as it happens."""
import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.xdist_group("dashboards")

LIVE = 10_000  # ms: the longest a live update may take here (flush 0.5 s, polls 1-2 s, checker ticks)


def server_row(page, server_id):
    return page.locator(f'section.vip tr[data-server="{server_id}"]')


def test_a_session_shows_live_and_a_drain_ends_safe(stack, login):
    overview = login()
    expect(overview.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE)
    card = overview.locator('section.vip[data-vs="dash-horizon"]')
    expect(card.locator('[data-field="listening"]')).to_have_text("listening on 1/1 workers", timeout=LIVE)
    expect(card.locator('[data-field="active"]')).to_have_text("0")
    expect(overview.locator(f'#workers tr[data-worker="{stack.worker_id}"]')).to_be_visible()

    sessions = overview.context.new_page()
    sessions.goto(stack.url + "/live/sessions/")
    expect(sessions.locator("#connections")).to_contain_text("No live connections")
    expect(sessions.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE)

    health = overview.context.new_page()
    health.goto(stack.url + "/live/health/")
    expect(health.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE)

    client, server_name = stack.connect()
    server_id = f"dash-uag/{server_name}"
    client.sendall(b"x" * 5000)
    echoed = 0
    while echoed < 5000:
        echoed += len(client.recv(65536))
    client_address = f"127.0.0.1:{client.getsockname()[1]}"

    # Overview: the VIP and its server count the connection, from the workers' stats batches.
    expect(card.locator('[data-field="active"]')).to_have_text("1", timeout=LIVE)
    expect(server_row(overview, server_id).locator('[data-field="sessions"]')).to_have_text("1", timeout=LIVE)
    expect(server_row(overview, server_id).locator('[data-field="health"]')).to_have_text("up", timeout=LIVE)

    # Sticky sessions: the row arrives live on the open page, and a fresh load renders it server-side.
    row = sessions.locator("#connections tbody tr", has_text=client_address)
    expect(row).to_be_visible(timeout=LIVE)
    expect(row).to_contain_text(server_id)
    sessions.goto(stack.url + "/live/sessions/?server=" + server_id)
    row = sessions.locator("#connections tbody tr", has_text=client_address)
    expect(row.locator('[data-field="bytes_in"]')).to_have_text("5.0 kB", timeout=LIVE)
    expect(row.locator('[data-field="ttl"]')).to_have_text(re.compile(r"^1 h 29 min|^1 h 30 min"))
    sessions.goto(stack.url + "/live/sessions/?table=persistence&client=127.0.0.1")
    entry = sessions.locator('#persistence tr[data-client-key="127.0.0.1"]')
    expect(entry.locator('[data-field="host"]')).to_have_text(stack.backends[server_name].host)

    # Drain: from the list to the server's page, drain it, watch it become safe when the client leaves.
    drain = overview.context.new_page()
    drain.goto(stack.url + "/live/drain/")
    drain.locator(f'#drain-servers tr[data-server="{server_id}"]').get_by_role("link", name="Drain page").click()
    verdict = drain.locator("#verdict")
    expect(verdict).to_have_attribute("data-level", "serving")
    drain.get_by_role("button", name="Drain now").click()
    expect(drain.locator(".message-success")).to_contain_text(f"{server_id} is now drain")
    expect(verdict).to_have_attribute("data-level", "draining", timeout=LIVE)
    expect(verdict).to_contain_text("Not safe to take down yet")
    expect(drain.locator("#remaining")).to_contain_text(client_address)

    client.close()
    expect(verdict).to_have_attribute("data-level", "safe", timeout=LIVE)
    expect(verdict).to_contain_text("Safe to take down")
    expect(drain.locator('[data-field="sessions"]')).to_have_text("0")
    expect(drain.locator('[data-field="sticky"]')).to_have_text("1")  # the entry stays: explained on the page
    expect(verdict).to_contain_text("1 persistence entry still name")
    expect(drain.locator("#remaining")).to_contain_text("Nothing is connected")

    # The open overview and health pages followed the drain without a reload.
    expect(server_row(overview, server_id).locator('[data-field="admin"]')).to_have_text("drain", timeout=LIVE)
    expect(server_row(overview, server_id).locator('[data-field="sessions"]')).to_have_text("0", timeout=LIVE)
    # The checker folds the drain into the health state within a tick (0.5 s); the page shows it on its next flush.
    event = health.locator("#events tbody tr.fresh", has_text=server_id)
    expect(event).to_contain_text("admin: drain", timeout=3_000)

    drain.get_by_role("button", name="Enable again").click()
    expect(verdict).to_have_attribute("data-level", "serving", timeout=LIVE)
