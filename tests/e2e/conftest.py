"""Browser tests: the demo page in real headless Chromium, driven by Playwright.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; or ``$CHROMIUM`` pointing at a
binary) and the ``playwright`` Python package (never ``playwright install``: the system
browser is used). Without them these tests are skipped locally and FAIL when ``$CI`` is set.

The demo runs as a subprocess (``python -m redismpx.demo``) on a free port with its own
embedded server, for the whole module. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from redismpx.server import ServerNotFound, find_server_binary

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
LOGS = ROOT / "artifacts" / "logs"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """``$CHROMIUM``, else Debian's ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # read by the ``pages`` fixture
    return report


# -- the demo ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # 503 while Redis is unreachable: still JSON
        return json.load(exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    """A demo on a free port with its own embedded server; after the module it gets SIGTERM,
    and both it and its embedded server must be gone."""
    try:
        find_server_binary()
    except ServerNotFound as exc:
        _unavailable(f"the demo needs a server binary: {exc}")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / "e2e-demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "redismpx.demo", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(base, proc)
        pid = health["redis"]["pid"]
        yield base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        assert not _pid_alive(pid), "the embedded server outlived the demo"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}; see {LOGS}")
        with contextlib.suppress(OSError):
            health: dict[str, Any] = _get_json(f"{base}/healthz")
            if health["status"] == "ok":
                return health
        time.sleep(0.1)
    pytest.fail("the demo did not become healthy within 30 s")


# -- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module. Not per session: while Playwright's sync API runs,
    its event loop is the thread's running loop, and pytest-asyncio tests cannot start."""
    executable = chromium_path()
    if executable is None:
        _unavailable("Chromium is not installed: apt-get install -y chromium")
    if importlib.util.find_spec("playwright") is None:
        _unavailable("the playwright package is not installed: pip install playwright")
    from playwright.sync_api import sync_playwright

    for stale in SCREENSHOTS.glob("*-FAILED.png"):
        stale.unlink()

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def pages(
    browser: Any, demo_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Any]]:
    """``pages(name)``: a demo page in a fresh browser context (as if another browser),
    loaded and connected. Every page is screenshotted if the test fails."""
    opened: dict[str, Any] = {}

    def open_page(name: str) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(demo_url)
        page.wait_for_selector("#ws-state[data-state=open]")
        page.wait_for_selector("#mpx-state[data-state=connected]")
        opened[name] = page
        return page

    yield open_page
    failed = getattr(request.node, "rep_call", None)
    for name, page in opened.items():
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):
                shoot(page, f"{request.node.name}-{name}-FAILED")
        page.context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``screenshot(page, name)``: save ``artifacts/screenshots/<test>-<name>.png``."""
    return lambda page, name: shoot(page, f"{request.node.name}-{name}")


def shoot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as ``artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
