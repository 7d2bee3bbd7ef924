"""Debian's Chromium driven by Playwright, for the tests of pages (one way to start it)."""
import contextlib
import os

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium():
    """A headless Chromium for as long as the block runs.

    Playwright's sync API keeps an event loop running in this thread for as long as the
    browser lives, and Django then refuses every ORM call made by tests sharing this
    process (SynchronousOnlyOperation). Those calls are plain synchronous test code, so
    allowing them is safe (the approach pytest-playwright documents for Django).
    """
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
