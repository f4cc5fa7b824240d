"""The demo page end to end in headless Chromium: channels, patterns, promises, a restart.

Every wait is on a page condition (Playwright's ``expect`` / ``wait_for_selector``) with a
timeout; nothing sleeps and hopes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

Pages = Callable[[str], Any]
Shot = Callable[[Any, str], Path]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def sub_row(page: Any, kind: str, name: str) -> Any:
    return page.locator(f'#subs li[data-kind="{kind}"][data-name="{name}"]')


def join(page: Any, channel: str) -> None:
    page.fill("#channel-name", channel)
    page.click("#join")
    _expect()(sub_row(page, "channel", channel)).to_have_attribute("data-state", "active")


def publish(page: Any, channel: str, message: str) -> None:
    page.fill("#pub-channel", channel)
    page.fill("#pub-message", message)
    page.click("#publish")


def message_on(page: Any, channel: str, text: str) -> Any:
    return page.locator(f'#messages li[data-channel="{channel}"]', has_text=text)


def test_two_pages_exchange_messages(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    alice, bob = pages("alice"), pages("bob")
    room = unique("room")
    join(alice, room)
    join(bob, room)

    publish(bob, room, "hello from bob")
    expect(message_on(alice, room, "hello from bob")).to_be_visible()
    # one multiplexer per process: Redis sees a single subscriber, however many pages
    expect(bob.locator("#publish-status")).to_contain_text("1 receiver")
    publish(alice, room, "hi bob")
    expect(message_on(bob, room, "hi bob")).to_be_visible()
    screenshot(alice, "alice")
    screenshot(bob, "bob")

    bob.locator(f'#subs li[data-name="{room}"] button.leave').click()
    expect(sub_row(bob, "channel", room)).to_have_count(0)
    publish(alice, room, "bob has left")
    expect(message_on(alice, room, "bob has left")).to_be_visible()


def test_pattern_receives_from_several_channels(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    reader, writer = pages("reader"), pages("writer")
    topic = unique("news")
    reader.fill("#pattern", f"{topic}:*")
    reader.click("#psubscribe")
    expect(sub_row(reader, "pattern", f"{topic}:*")).to_have_attribute("data-state", "active")

    for channel in ("sport", "tech", "weather"):
        publish(writer, f"{topic}:{channel}", f"about {channel}")
        expect(writer.locator("#publish-status")).to_contain_text(f"{topic}:{channel}")
    for channel in ("sport", "tech", "weather"):
        row = message_on(reader, f"{topic}:{channel}", f"about {channel}")
        expect(row).to_have_attribute("data-pattern", f"{topic}:*")
    publish(writer, f"other-{topic}", "not for the pattern")
    expect(writer.locator("#publish-status")).to_contain_text("0 receiver")
    expect(reader.locator("#messages li")).to_have_count(3)
    screenshot(reader, "reader")


def test_promise_answered_from_another_page(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    asker, answerer = pages("asker"), pages("answerer")
    suffix = unique("q")
    asker.fill("#ask-suffix", suffix)
    asker.fill("#ask-question", "what is 6 x 7?")
    asker.fill("#ask-timeout", "60")
    asker.click("#ask")
    mine = asker.locator(f'#promises li[data-suffix="{suffix}"]')
    expect(mine).to_have_attribute("data-state", "pending")
    expect(sub_row(asker, "promise", "promise:")).to_have_attribute("data-state", "active")

    question = answerer.locator(f'#questions li[data-suffix="{suffix}"]')
    expect(question).to_contain_text("what is 6 x 7?")
    screenshot(asker, "pending")
    question.locator("input.answer-text").fill("42")
    question.locator("button.answer-button").click()

    expect(mine).to_have_attribute("data-state", "resolved")
    expect(mine.locator(".answer")).to_have_text("answer: 42")
    expect(question).to_have_count(0)  # answered: gone from every board
    screenshot(asker, "resolved")


def test_promise_timeout_is_shown(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    asker = pages("asker")
    suffix = unique("late")
    asker.fill("#ask-suffix", suffix)
    asker.fill("#ask-timeout", "1")
    asker.click("#ask")
    mine = asker.locator(f'#promises li[data-suffix="{suffix}"]')
    expect(mine).to_have_attribute("data-state", "timeout", timeout=10_000)
    expect(mine).to_contain_text("no answer within 1 s")
    screenshot(asker, "timeout")


def test_bad_input_gets_an_error_not_a_crash(pages: Pages) -> None:
    expect = _expect()
    page = pages("page")
    page.fill("#channel-name", "no spaces allowed")
    page.click("#join")
    expect(page.locator("#errors li").first).to_contain_text("may only contain")
    join(page, unique("still-works"))


def test_restart_shows_disconnected_then_active(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    alice, bob = pages("alice"), pages("bob")
    room = unique("survivor")
    join(alice, room)
    reconnects = int(alice.locator('#stats tr[data-key="reconnects"] td').inner_text())

    alice.click("#restart-redis")
    row = sub_row(alice, "channel", room)
    expect(row).to_have_attribute("data-state", "disconnected", timeout=10_000)
    expect(alice.locator("#mpx-state")).not_to_have_attribute("data-state", "connected")
    screenshot(alice, "disconnected")
    expect(row).to_have_attribute("data-state", "active", timeout=30_000)
    expect(alice.locator("#restart-status")).to_contain_text("restarted", timeout=30_000)
    expect(alice.locator("#mpx-state")).to_have_attribute("data-state", "connected")
    expect(alice.locator('#stats tr[data-key="reconnects"] td')).to_have_text(
        str(reconnects + 1)
    )
    screenshot(alice, "active-again")

    publish(bob, room, "after the restart")
    expect(message_on(alice, room, "after the restart")).to_be_visible()
