"""The demo page end to end in headless Chromium: channels, patterns, promises, a restart,
and what the page teaches (the tab and connection counts, the tabs a message reached, the
link state, the stats in words).

Every wait is on a page condition (Playwright's ``expect`` / ``wait_for_selector``) with a
timeout; nothing sleeps and hopes.
"""

from __future__ import annotations

import json
import re
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
    expect(bob.locator("#publish-status")).to_contain_text("reached 2 tabs")
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
    expect(writer.locator("#publish-status")).to_contain_text("reached 0 tabs")
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
    expect(alice.locator('#stats tr[data-key="reconnects"] td')).to_have_text(str(reconnects + 1))
    screenshot(alice, "active-again")

    publish(bob, room, "after the restart")
    expect(message_on(alice, room, "after the restart")).to_be_visible()


# -- what the page teaches ---------------------------------------------------------------------

GREEN, ORANGE, RED = "rgb(22, 163, 74)", "rgb(217, 119, 6)", "rgb(220, 38, 38)"

# Records, at every change, the Redis link badge's state and colour and the restart status
# with the badge state at that moment (read back by ``recorded``).
RECORDER = """() => {
  const badge = document.querySelector("#mpx-state");
  const status = document.querySelector("#restart-status");
  window.__seen = { badge: [], restart: [] };
  const look = () => {
    const state = badge.dataset.state, colour = getComputedStyle(badge).backgroundColor;
    const last = window.__seen.badge.at(-1);
    if (!last || last.state !== state) window.__seen.badge.push({ state, colour });
    window.__seen.restart.push({ text: status.textContent, link: state });
  };
  look();
  const observer = new MutationObserver(look);
  const all = { attributes: true, childList: true, characterData: true, subtree: true };
  observer.observe(badge, all);
  observer.observe(status, all);
}"""


def recorded(page: Any) -> dict[str, list[dict[str, str]]]:
    seen: dict[str, list[dict[str, str]]] = page.evaluate("() => window.__seen")
    return seen


def restart_redis(page: Any) -> None:
    """Click the restart button and wait until the page says the link is back."""
    page.click("#restart-redis")
    _expect()(page.locator("#restart-status")).to_have_attribute(
        "data-phase", "done", timeout=30_000
    )


def wait_for_tabs(page: Any, count: int) -> None:
    """Until the page counts ``count`` tabs (sockets of earlier tests may still be closing)."""
    _expect()(page.locator("#tab-count")).to_have_text(str(count), timeout=10_000)


def test_intro_says_what_it_shows_and_links_docs_and_endpoints(
    pages: Pages, screenshot: Shot
) -> None:
    expect = _expect()
    page = pages("reader")
    intro = page.locator("#intro")
    expect(intro).to_contain_text("one Redis Pub/Sub connection")
    second = page.locator("#second-tab")
    expect(second).to_have_attribute("target", "_blank")
    expect(second).to_have_attribute("href", "/")
    hrefs = intro.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    for href in ("/metrics", "/healthz", "/docs/guide.md", "/docs/architecture.md"):
        assert href in hrefs, hrefs
    for href in hrefs:
        response = page.request.get(page.url.rstrip("/") + href)
        assert response.status == 200, (href, response.status)
    guide = page.request.get(page.url.rstrip("/") + "/docs/guide.md")
    assert guide.text().startswith("# Guide")
    assert "redismpx_up 1.0" in page.request.get(page.url.rstrip("/") + "/metrics").text()
    screenshot(page, "intro")


def test_counter_tabs_to_one_redis_connection(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    alice = pages("alice")
    wait_for_tabs(alice, 1)
    expect(alice.locator("#counter")).to_contain_text("browser tabs: 1")
    expect(alice.locator("#redis-count")).to_have_text("1")
    bob = pages("bob")
    wait_for_tabs(alice, 2)  # pushed to alice when bob's tab opened
    wait_for_tabs(bob, 2)
    carol = pages("carol")
    wait_for_tabs(alice, 3)
    expect(alice.locator("#redis-count")).to_have_text("1")  # still one connection
    screenshot(alice, "three-tabs")
    carol.context.close()
    bob.close()
    wait_for_tabs(alice, 1)
    expect(alice.locator("#redis-count")).to_have_text("1")


def test_published_counts_the_tabs_reached(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    alice, bob, carol = pages("alice"), pages("bob"), pages("carol")
    room = unique("news")
    join(alice, room)
    join(bob, room)
    publish(carol, room, "to both")  # carol is not subscribed
    status = carol.locator("#publish-status")
    expect(status).to_contain_text(f"Published to {room}: reached 2 tabs of this server")
    expect(status).to_contain_text("Redis subscriber connections: 1")
    expect(status).to_have_attribute("data-tabs", "2")
    expect(message_on(alice, room, "to both")).to_be_visible()
    expect(message_on(bob, room, "to both")).to_be_visible()
    screenshot(carol, "two-tabs-reached")

    bob.locator(f'#subs li[data-name="{room}"] button.leave').click()
    expect(sub_row(bob, "channel", room)).to_have_count(0)
    publish(carol, room, "to alice")
    expect(status).to_contain_text(f"Published to {room}: reached 1 tab of this server")


def test_stats_are_explained_and_shared_by_the_process(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    page = pages("page")
    panel = page.locator("#stats-panel")
    expect(panel.locator("h2").first).to_contain_text("shared by every tab")
    expect(page.locator('#stats tr[data-key="reconnects"] th')).to_contain_text(
        "Reconnects after an outage"
    )
    expect(page.locator('#stats tr[data-key="messages_received"] th')).to_contain_text(
        "Messages read from Redis"
    )
    labels = page.locator("#stats th").all_inner_texts()
    assert len(labels) >= 10, labels
    assert not [label for label in labels if "_" in label], labels  # no snake_case
    expect(page.locator('#stats tr[data-key="last_error"]')).to_have_count(0)
    expect(page.locator("#link-status")).to_contain_text("Link to Redis: connected since")
    screenshot(page, "stats")


def test_link_state_colours_and_the_restart_wording(pages: Pages, screenshot: Shot) -> None:
    """Red while down, orange only while connecting, green when connected; the header says
    "restarted" only once the link is connected again."""
    expect = _expect()
    page = pages("page")
    badge = page.locator("#mpx-state")
    expect(badge).to_have_css("background-color", GREEN)
    page.evaluate(RECORDER)

    page.click("#restart-redis")
    expect(badge).to_have_attribute("data-state", "disconnected", timeout=10_000)
    expect(badge).to_have_css("background-color", RED)  # for the whole outage (1.5 s)
    expect(page.locator("#link-status")).to_have_attribute("data-state", "disconnected")
    expect(page.locator("#link-status")).to_contain_text("down since")
    expect(page.locator("#restart-status")).not_to_contain_text("restarted")
    screenshot(page, "down")
    expect(page.locator("#restart-status")).to_have_attribute("data-phase", "done", timeout=30_000)
    expect(badge).to_have_attribute("data-state", "connected")
    expect(badge).to_have_css("background-color", GREEN)
    expect(page.locator("#restart-status")).to_contain_text("restarted")

    seen = recorded(page)
    colours = {"connected": GREEN, "connecting": ORANGE, "disconnected": RED}
    for step in seen["badge"]:
        assert step["colour"] == colours[step["state"]], seen["badge"]
    # down, then back: no orange "connecting" in between (Redis was refusing: it was down)
    assert [s["state"] for s in seen["badge"]] == ["connected", "disconnected", "connected"]
    early = [s for s in seen["restart"] if "restarted" in s["text"] and s["link"] != "connected"]
    assert not early, early
    screenshot(page, "back")


def test_recovered_error_is_history_on_the_page_and_in_healthz(
    pages: Pages, screenshot: Shot
) -> None:
    expect = _expect()
    page = pages("page")
    restart_redis(page)
    link = page.locator("#link-status")
    expect(link).to_have_attribute("data-state", "connected")
    expect(link).not_to_contain_text("error")
    outage = page.locator("#last-outage")
    expect(outage).to_be_visible()
    expect(outage).to_contain_text(re.compile(r"recovered: down from \S+ .*to \S+"))
    health = page.request.get(page.url.rstrip("/") + "/healthz")
    assert health.status == 200
    body = json.loads(health.text())
    assert body["status"] == "ok"
    assert body["link"]["error"] is None
    assert body["link"]["last_outage"]["error"]
    assert "last_error" not in body["mpx"]
    screenshot(page, "recovered")


def test_long_promise_detail_does_not_squeeze_its_name(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    asker, answerer = pages("asker"), pages("answerer")
    suffix = unique("long")
    asker.fill("#ask-suffix", suffix)
    asker.fill("#ask-question", "a question " * 15)
    asker.fill("#ask-timeout", "60")
    asker.click("#ask")
    mine = asker.locator(f'#promises li[data-suffix="{suffix}"]')
    expect(mine).to_have_attribute("data-state", "pending")
    question = answerer.locator(f'#questions li[data-suffix="{suffix}"]')
    question.locator("input.answer-text").fill("a long answer " * 30)
    question.locator("button.answer-button").click()
    expect(mine).to_have_attribute("data-state", "resolved")
    screenshot(asker, "long-detail")
    name = mine.locator(".name")
    expect(name).to_have_text(f"promise:{suffix}")
    lines = name.evaluate(
        "el => el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight)"
    )
    assert lines < 1.5, f"the name wraps over {lines:.1f} lines"
    width = name.evaluate("el => el.getBoundingClientRect().width")
    assert width >= name.evaluate("el => el.scrollWidth") - 1


def test_interrupted_question_leaves_open_questions(pages: Pages, screenshot: Shot) -> None:
    expect = _expect()
    asker, answerer = pages("asker"), pages("answerer")
    suffix = unique("cut")
    asker.fill("#ask-suffix", suffix)
    asker.fill("#ask-question", "will anyone hear?")
    asker.fill("#ask-timeout", "120")
    asker.click("#ask")
    question = answerer.locator(f'#questions li[data-suffix="{suffix}"]')
    expect(question.locator("button.answer-button")).to_be_visible()

    asker.click("#restart-redis")
    mine = asker.locator(f'#promises li[data-suffix="{suffix}"]')
    expect(mine).to_have_attribute("data-state", "interrupted", timeout=10_000)
    expect(question).to_have_count(0)  # no Answer button for an answer nobody hears
    expect(asker.locator(f'#questions li[data-suffix="{suffix}"]')).to_have_count(0)
    expect(asker.locator("#restart-status")).to_have_attribute("data-phase", "done", timeout=30_000)
    expect(question).to_have_count(0)
    screenshot(answerer, "gone")


def test_publish_clears_the_box_and_messages_show_time_and_sender(
    pages: Pages, screenshot: Shot
) -> None:
    expect = _expect()
    alice, bob = pages("alice"), pages("bob")
    expect(alice.locator("#tab-name")).to_have_text(re.compile(r"^tab-\d+$"))
    expect(bob.locator("#tab-name")).to_have_text(re.compile(r"^tab-\d+$"))
    bob_name = bob.locator("#tab-name").inner_text()
    assert alice.locator("#tab-name").inner_text() != bob_name
    room = unique("chat")
    join(alice, room)
    join(bob, room)
    publish(bob, room, "hello alice")
    expect(bob.locator("#pub-message")).to_have_value("")
    expect(bob.locator("#pub-channel")).to_have_value(room)  # kept for the next message
    row = message_on(alice, room, "hello alice")
    expect(row.locator(".from")).to_have_text(f"from {bob_name}")
    expect(row.locator(".time")).to_have_text(re.compile(r"\d{1,2}:\d{2}:\d{2}"))
    expect(message_on(bob, room, "hello alice").locator(".from")).to_have_text(
        f"from {bob_name} (this tab)"
    )
    screenshot(alice, "message")


def test_inputs_are_labelled(pages: Pages) -> None:
    expect = _expect()
    page = pages("page")
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input')]"
        ".filter(i => i.labels.length === 0 && !i.getAttribute('aria-label'))"
        ".map(i => i.id || i.outerHTML)"
    )
    assert unlabelled == []
    expect(page.get_by_label("Timeout (seconds)")).to_have_id("ask-timeout")
    expect(page.get_by_label("Message")).to_have_id("pub-message")
    expect(page.get_by_label("Pattern")).to_have_id("pattern")


def test_page_loads_without_a_404(browser: Any, demo_url: str) -> None:
    """The favicon included. A page without an icon link makes Chromium fetch /favicon.ico
    behind Playwright's back (a 404 it cannot see); this page links an SVG icon, which the
    browser fetches as one of the page's requests, and /favicon.ico serves it too (for
    /healthz or /metrics opened in a browser)."""
    expect = _expect()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        failed: list[str] = []
        page.on(
            "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
        with page.expect_response(lambda r: "favicon" in r.url) as icon:
            page.goto(demo_url)
        assert icon.value.status == 200
        assert icon.value.headers["content-type"].startswith("image/svg+xml")
        expect(page.locator("#mpx-state")).to_have_attribute("data-state", "connected")
        assert page.locator("link[rel=icon]").get_attribute("href") == "/static/favicon.svg"
        fallback = page.request.get(demo_url + "/favicon.ico")
        assert fallback.status == 200
        assert fallback.headers["content-type"].startswith("image/svg+xml")
        assert failed == []
    finally:
        context.close()


def _published(page: Any) -> int:
    return int(page.locator("#numbers-panel").get_attribute("data-published") or 0)


def test_nothing_missed_across_a_restart(pages: Pages, screenshot: Shot) -> None:
    """The "Nothing missed" panel: numbered publications with history, a restart of the
    embedded Redis (with persistence) from the header, and the recovering subscription says
    it has every message exactly once; the plain one beside it says what it missed, if it
    missed anything (a race: whether its link resubscribed before the publisher was back)."""
    expect = _expect()
    page = pages("numbers")
    panel = page.locator("#numbers-panel")
    recovering, plain = page.locator("#tally-recovering"), page.locator("#tally-plain")
    expect(page.locator("#numbers-persistence")).to_contain_text("appendfsync always")
    page.click("#numbers-start")
    expect(panel).to_have_attribute("data-state", "publishing", timeout=10_000)
    expect(page.locator("#numbers-channel")).to_contain_text("mpx-demo:numbers:")
    page.wait_for_function(
        "() => Number(document.querySelector('#numbers-panel').dataset.published) >= 20"
    )
    restart_redis(page)
    target = _published(page) + 20
    page.wait_for_function(
        f"() => Number(document.querySelector('#numbers-panel').dataset.published) >= {target}",
        timeout=30_000,
    )
    expect(recovering.locator(".verdict")).to_contain_text(
        "Every message exactly once, in order, across 1 outage"
    )
    expect(recovering).to_have_attribute("data-verdict", "exact")
    expect(recovering).to_have_attribute("data-missed", "0")
    expect(recovering.locator('tr[data-key="gaps"] td')).to_have_text("0")
    expect(plain.locator(".verdict")).to_have_text(
        re.compile(r"Missed \d+: #\d+|Nothing missed across 1 outage")
    )
    screenshot(page, "after-the-restart")

    page.click("#numbers-stop")
    expect(panel).to_have_attribute("data-state", "stopped")
    # Once the last one is delivered, the recovering subscription has received them all.
    page.wait_for_function(
        """() => {
          const panel = document.querySelector('#numbers-panel');
          const box = document.querySelector('#tally-recovering');
          return box.dataset.received === panel.dataset.published;
        }"""
    )
    expect(recovering).to_have_attribute("data-verdict", "exact")
    missed = int(plain.get_attribute("data-missed") or 0)
    recovered = recovering.locator('tr[data-key="recovered"] td')
    expect(recovered).to_have_text(str(missed))
