"""Screenshots of each dashboard with real traffic on it, for the README.

They go to a temporary folder, or to $VIEWLB_SCREENSHOTS_DIR: to refresh the committed ones run
    VIEWLB_SCREENSHOTS_DIR=docs .venv/bin/python -m pytest tests/dashboards -k screenshots
"""
import os
import struct
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.xdist_group("dashboards")

USERS = 18  # distinct loopback sources: one persistence entry each
LIVE = 10_000


class Traffic:
    """Clients from 127.0.0.10, .11, ... that keep sending a little, like Horizon tunnels, until stopped."""

    def __init__(self, stack, users=USERS):
        self.clients = [stack.connect(source=f"127.0.0.{10 + i}")[0] for i in range(users)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + 60  # bounded, whatever the test does
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            for i, sock in enumerate(self.clients):
                payload = b"." * (500 + 300 * ((n + i) % 7))
                sock.sendall(payload)
                got = 0
                while got < len(payload):
                    got += len(sock.recv(65536))
            self.stop.wait(0.2)

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for sock in self.clients:
            sock.close()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_screenshots_of_each_dashboard(stack, login, tmp_path):
    out = Path(os.environ.get("VIEWLB_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    traffic = Traffic(stack)
    try:
        page = login({"width": 1280, "height": 1000})
        card = page.locator('section.vip[data-vs="dash-horizon"]')
        expect(card.locator('[data-field="active"]')).to_have_text(str(USERS), timeout=LIVE)
        page.wait_for_timeout(6000)  # let the charts draw a few seconds of traffic
        shots = {"overview": page}

        sessions = page.context.new_page()
        sessions.goto(stack.url + "/live/sessions/")
        expect(sessions.locator("#connections tbody tr[data-id]")).to_have_count(USERS)
        shots["sessions"] = sessions

        persistence = page.context.new_page()
        persistence.goto(stack.url + "/live/sessions/?table=persistence")
        expect(persistence.locator("#persistence tbody tr[data-client-key]").first).to_be_visible()
        shots["persistence"] = persistence

        drain = page.context.new_page()
        drain.goto(f"{stack.url}/live/drain/{stack.servers['uag2']}/")
        drain.get_by_role("button", name="Drain now").click()
        expect(drain.locator("#verdict")).to_have_attribute("data-level", "draining", timeout=LIVE)
        shots["drain"] = drain

        health = page.context.new_page()
        health.goto(stack.url + "/live/health/")
        expect(health.locator("#events tbody tr.event-worse").first).to_be_visible(timeout=LIVE)
        shots["health"] = health

        for name, shot in shots.items():
            path = out / f"dashboard-{name}.png"
            shot.screenshot(path=str(path), full_page=True)
            width, height = png_size(path)
            assert width == 1280 and height >= 600, (name, width, height)
        drain.get_by_role("button", name="Enable again").click()
        expect(drain.locator("#verdict")).to_have_attribute("data-level", "serving", timeout=LIVE)
    finally:
        traffic.close()
