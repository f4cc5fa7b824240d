// The redismpx demo page: a thin view over the JSON protocol of /ws/json.
"use strict";

const $ = (sel) => document.querySelector(sel);
const MAX_LOG = 200;

let ws = null;
let retryDelay = 500;
let prefix = "promise:";
let myName = null; // this tab's short name, from the welcome
const wanted = { channels: new Set(), patterns: new Set() }; // re-sent after a reconnect
const promiseTimers = new Map(); // promise id -> interval id of its countdown
let restart = null; // a restart of the embedded Redis in progress (see renderRestart)

// What each stats() key means, in plain words (unknown keys are shown with their name).
const STAT_LABELS = {
  subscriptions: ["Subscriptions open", "every tab's channel and pattern subscriptions, plus the question board's two"],
  channels: ["Channels in use", "distinct names the tabs want: two tabs on one channel make one SUBSCRIBE"],
  patterns: ["Patterns in use", "distinct patterns the tabs want, as for channels"],
  shard_channels: ["Shard channels in use", "Redis Cluster only"],
  messages_received: ["Messages read from Redis", "each message once, however many tabs want it"],
  messages_dispatched: ["Deliveries to subscriptions", "one message read, handed to every subscription that wants it"],
  connects: ["Pub/Sub connections opened", "the first one, and one per reconnect"],
  reconnects: ["Reconnects after an outage", "each one resubscribed every name"],
  dropped: ["Messages dropped", "a subscription's buffer was full: its tab read too slowly"],
  callback_errors: ["Errors raised by callbacks", "the demo's own code failing on a message"],
  publish_connects: ["Publish connections opened", "publishing has its own connection"],
  published: ["Publishes Redis answered", "from every tab, health probes included"],
};
const STATS_SKIPPED = new Set(["state"]); // shown by the link line instead

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify(obj));
    return true;
  }
  addError("not connected to the demo server");
  return false;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "className") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();
const now = () => Date.now() / 1000;
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function pushLog(list, item) {
  list.prepend(item);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function addError(text) {
  pushLog($("#errors"), el("li", { className: "error" }, `${clock(now())} ${text}`));
}

// -- subscriptions --------------------------------------------------------------------------

function subRow(kind, name) {
  const selector = `#subs li[data-kind="${kind}"][data-name="${CSS.escape(name)}"]`;
  let row = document.querySelector(selector);
  if (!row) {
    const leave = el("button", { type: "button", className: "leave" }, kind === "promise" ? "" : "Leave");
    if (kind === "promise") leave.hidden = true;
    leave.addEventListener("click", () => {
      if (kind === "channel") { wanted.channels.delete(name); send({ op: "leave", channel: name }); }
      else { wanted.patterns.delete(name); send({ op: "punsubscribe", pattern: name }); }
    });
    row = el("li", { className: "sub", dataset: { kind, name, state: "activating" } },
      el("span", { className: "kind muted" }, kind),
      el("span", { className: "name" }, name),
      el("span", { className: "state" }, "activating"),
      leave);
    $("#subs").append(row);
  }
  return row;
}

function setSubState(kind, name, state, error) {
  if (state === "left") {
    const row = document.querySelector(
      `#subs li[data-kind="${kind}"][data-name="${CSS.escape(name)}"]`);
    if (row) row.remove();
    return;
  }
  const row = subRow(kind, name);
  row.dataset.state = state;
  row.querySelector(".state").textContent = state;
  row.title = error || "";
}

// -- promises -------------------------------------------------------------------------------

function promiseRow(msg) {
  let row = document.querySelector(`#promises li[data-id="${msg.id}"]`);
  if (!row) {
    row = el("li", { className: "promise", dataset: { id: String(msg.id), suffix: msg.suffix } },
      el("span", { className: "name" }, `${prefix}${msg.suffix}`),
      el("span", { className: "state" }, ""),
      el("span", { className: "question muted" }, msg.question || ""),
      el("span", { className: "detail" }, ""));
    $("#promises").prepend(row);
  }
  return row;
}

function onPromise(msg) {
  const row = promiseRow(msg);
  row.dataset.state = msg.state;
  row.querySelector(".state").textContent = msg.state;
  const detail = row.querySelector(".detail");
  clearInterval(promiseTimers.get(msg.id));
  promiseTimers.delete(msg.id);
  if (msg.state === "pending") {
    const tick = () => {
      const left = Math.max(0, msg.deadline - now());
      detail.textContent = `${left.toFixed(0)} s left`;
    };
    tick();
    promiseTimers.set(msg.id, setInterval(tick, 500));
  } else if (msg.state === "resolved") {
    detail.textContent = `answer: ${msg.message}`;
    detail.className = "detail answer";
  } else {
    detail.textContent = msg.error || "";
  }
}

function renderQuestions(questions) {
  const list = $("#questions");
  const seen = new Set();
  for (const q of questions) {
    seen.add(q.suffix);
    if (list.querySelector(`li[data-suffix="${CSS.escape(q.suffix)}"]`)) continue;
    const input = el("input", { placeholder: "your answer", className: "answer-text",
                                "aria-label": `answer to ${q.suffix}` });
    const button = el("button", { type: "button", className: "answer-button" }, "Answer");
    button.addEventListener("click", () => {
      send({ op: "answer", suffix: q.suffix, message: input.value });
    });
    list.append(el("li", { className: "question", dataset: { suffix: q.suffix } },
      el("span", { className: "name" }, q.suffix),
      el("span", { className: "question-text muted" }, q.question || "(no text)"),
      input, button));
  }
  // Answered, expired, or withdrawn by its asker (timed out, interrupted, tab closed).
  for (const li of [...list.children]) if (!seen.has(li.dataset.suffix)) li.remove();
}

// -- the process' status --------------------------------------------------------------------

function renderLink(link) {
  $("#mpx-state").textContent = $("#mpx-state").dataset.state = link.state;
  const line = $("#link-status");
  line.dataset.state = link.state;
  if (link.state === "connected") {
    line.textContent = `Link to Redis: connected since ${clock(link.since)}.`;
  } else if (link.state === "connecting" && !link.error) {
    line.textContent = "Link to Redis: connecting…";
  } else {
    const since = link.down_since ? ` since ${clock(link.down_since)}` : "";
    const error = link.error ? ` Last error (${clock(link.error_at)}): ${link.error}` : "";
    line.textContent = `Link to Redis: down${since}, reconnecting by itself.${error}`;
  }
  const outage = $("#last-outage");
  const last = link.last_outage;
  outage.hidden = !last || link.state !== "connected";
  if (last) {
    const error = last.error ? `: ${last.error}` : "";
    outage.textContent = `Last outage, recovered: down from ${clock(last.since)} to ` +
      `${clock(last.recovered_at)}${error}`;
  }
}

function renderStats(msg) {
  const body = $("#stats tbody");
  for (const [key, value] of Object.entries(msg.stats)) {
    if (STATS_SKIPPED.has(key)) continue;
    let row = body.querySelector(`tr[data-key="${key}"]`);
    if (!row) {
      const [label, hint] = STAT_LABELS[key] || [key.replaceAll("_", " "), ""];
      const th = el("th", {}, label);
      if (hint) th.append(el("small", {}, hint));
      row = el("tr", { dataset: { key } }, th, el("td", {}, ""));
      body.append(row);
    }
    const text = value === null ? "-" : Array.isArray(value) ? value.join(", ") : String(value);
    row.querySelector("td").textContent = text;
  }
  $("#tab-count").textContent = String(msg.tabs);
  $("#redis-count").textContent = String(msg.pubsub_connections);
  renderLink(msg.link);
  $("#restart-redis").hidden = !msg.redis.embedded;
  renderQuestions(msg.questions);
  renderRestart(msg);
  renderNumbers(msg.numbers, msg.redis);
}

// A restart is told in steps; it says "restarted" only once the link is connected again
// after having been seen down (or after the reconnect counter moved).
function renderRestart(msg) {
  if (!restart) return;
  const status = $("#restart-status");
  if (msg && msg.link.state !== "connected") restart.sawDown = true;
  const reconnected = msg && msg.link.state === "connected" &&
    (restart.sawDown || msg.stats.reconnects > restart.reconnects);
  if (restart.pid !== undefined && reconnected) {
    status.dataset.phase = "done";
    status.textContent = `Redis restarted (pid ${restart.pid}); the link reconnected at ` +
      `${clock(now())} and resubscribed everything.`;
    $("#restart-redis").disabled = false;
    restart = null;
  } else if (restart.pid !== undefined) {
    status.dataset.phase = "waiting";
    status.textContent = `Redis is running again (pid ${restart.pid}); waiting for the ` +
      "link to reconnect…";
  }
}

// -- "Nothing missed": the numbered run (see recovery.py) ----------------------------------

const TALLY_ROWS = [
  // [key, label, shown for the plain subscription too, bad when above zero]
  ["received", "Received", true, false],
  ["published", "Published", true, false],
  ["missed", "Missed", true, true],
  ["duplicates", "Duplicates", true, true],
  ["out_of_order", "Out of order", true, true],
  ["gaps", "Gap notices", false, true],
  ["recovered", "Recovered from the history", false, false],
  ["outages", "Outages", true, false],
];

const numberRanges = (ranges) =>
  ranges.map(([a, b]) => (a === b ? `#${a}` : `#${a}–#${b}`)).join(", ");

const GAP_REASONS = {
  epoch: "a new history replaced the one it was reading (Redis lost it: a restart without " +
    "persistence?)",
  lost: "the history is gone (expired, evicted, or Redis restarted without persistence)",
  trimmed: "more was published during the outage than the history keeps",
};

function tallyVerdict(kind, t, published) {
  if (t.duplicates || t.out_of_order) {
    return ["wrong", `${plural(t.duplicates, "duplicate", "duplicates")}, ` +
      `${t.out_of_order} out of order`];
  }
  if (t.state === "disconnected") {
    return ["waiting", kind === "recovering"
      ? "Link down: once back, it first reads what it missed from the history."
      : "Link down: what is published before it has resubscribed is lost to it."];
  }
  if (t.gaps) {
    const why = t.gap_reasons.map((r) => GAP_REASONS[r] || r).join("; ");
    const still = t.missed ? "" : " No published message is missing here.";
    return ["gap", `Gap notice: ${why}. An app re-syncs from its database here.${still}`];
  }
  if (t.missed) {
    const more = t.missed_ranges.length >= 10 ? ", …" : "";
    return ["missed", `Missed ${t.missed}: ${numberRanges(t.missed_ranges)}${more}.`];
  }
  if (!published) return ["none", ""];
  const onTheWay = t.pending ? ` (${t.pending} on the way)` : "";
  if (!t.outages) return ["exact", `Every message once, in order, so far${onTheWay}.`];
  const outages = plural(t.outages, "outage", "outages");
  if (kind === "recovering") {
    return ["exact", `Every message exactly once, in order, across ${outages}` +
      `${onTheWay}; ${t.recovered} came from the history.`];
  }
  return ["exact", `Nothing missed across ${outages}: it was subscribed again before ` +
    `anything was published${onTheWay}.`];
}

function renderTally(kind, t, published) {
  const box = $(`#tally-${kind}`);
  const state = box.querySelector("h3 .state");
  state.textContent = state.dataset.state = t.state;
  const body = box.querySelector(".counts tbody");
  const values = { ...t, received: t.received, published };
  for (const [key, label, plain, bad] of TALLY_ROWS) {
    if (kind === "plain" && !plain) continue;
    let row = body.querySelector(`tr[data-key="${key}"]`);
    if (!row) {
      row = el("tr", { dataset: { key } }, el("th", {}, label), el("td", {}, ""));
      body.append(row);
    }
    const value = values[key] ?? 0;
    row.querySelector("td").textContent = String(value);
    if (bad && value > 0) row.dataset.bad = ""; else delete row.dataset.bad;
  }
  const [verdict, text] = tallyVerdict(kind, t, published);
  box.dataset.verdict = verdict;
  box.dataset.missed = String(t.missed);
  box.dataset.received = String(t.received);
  box.querySelector(".verdict").textContent = text;
}

const NUMBERS_STATES = {
  off: "off: press Start",
  starting: "starting: waiting for Redis to confirm both subscriptions…",
  publishing: "publishing",
  waiting: "waiting for Redis: the next publication goes out once it is back",
  stopped: "stopped",
};

function renderNumbers(n, redis) {
  if (!n) return;
  const panel = $("#numbers-panel");
  const state = n.state === "publishing" && n.waiting ? "waiting" : n.state;
  panel.dataset.state = state;
  panel.dataset.published = String(n.published);
  $("#numbers-channel").textContent = n.channel;
  $("#numbers-rate").textContent = String(n.rate);
  $("#numbers-history").textContent = String(n.history_size);
  let text = NUMBERS_STATES[state] || state;
  if (state === "publishing") {
    text += ` ${n.rate} a second`;
    if (redis.embedded && !n.recovering.outages) text += ": now press Restart embedded Redis";
  }
  if (state === "stopped" && n.stop_reason && n.stop_reason !== "stopped") {
    text += `: ${n.stop_reason}`;
  }
  $("#numbers-state").textContent = text;
  $("#numbers-start").textContent = n.state === "off" ? "Start" : "Start again";
  $("#numbers-stop").disabled = !(n.state === "starting" || n.state === "publishing");
  $("#numbers-published").textContent = String(n.published);
  $("#numbers-last").textContent = n.last_published ? `(the last: #${n.last_published})` : "";
  $("#numbers-uncertain").textContent = n.uncertain
    ? `· ${plural(n.uncertain, "publication", "publications")} cut by the restart: maybe ` +
      "published, maybe not (the connection broke after the write); not counted"
    : "";
  if (n.state !== "off") {
    renderTally("recovering", n.recovering, n.published);
    renderTally("plain", n.plain, n.published);
  }
  $("#numbers-persistence").textContent = redis.embedded
    ? `The embedded Redis runs with persistence (${redis.persistence}): a restart keeps ` +
      "the history."
    : "Redis is external: if it restarts without persistence, the history is lost and the " +
      "recovering subscription says so (a gap notice) rather than missing messages silently.";
}

// -- the socket -----------------------------------------------------------------------------

const handlers = {
  welcome(msg) {
    prefix = msg.prefix;
    myName = msg.name;
    $("#prefix").textContent = prefix;
    $("#tab-name").textContent = myName;
    document.title = `${myName} · redismpx demo`;
    for (const c of wanted.channels) send({ op: "join", channel: c });
    for (const p of wanted.patterns) send({ op: "psubscribe", pattern: p });
  },
  message(msg) {
    const from = msg.from === null || msg.from === undefined
      ? "not from a tab of this server"
      : msg.from === myName ? `from ${msg.from} (this tab)` : `from ${msg.from}`;
    const via = msg.pattern ? ` via ${msg.pattern}` : "";
    pushLog($("#messages"), el("li",
      { className: "msg", dataset: { channel: msg.channel, pattern: msg.pattern || "", from: msg.from || "" } },
      el("span", { className: "time" }, clock(now())),
      el("span", { className: "name" }, msg.channel),
      el("span", { className: "from" }, `${from}${via}`),
      el("span", { className: "text" }, msg.message)));
  },
  sub(msg) { setSubState(msg.kind, msg.name, msg.state, msg.error); },
  promise: onPromise,
  published(msg) {
    const status = $("#publish-status");
    delete status.dataset.failed;
    status.dataset.tabs = String(msg.tabs);
    status.dataset.redis = String(msg.redis);
    status.textContent = `Published to ${msg.channel}: reached ` +
      `${plural(msg.tabs, "tab", "tabs")} of this server. ` +
      `Redis subscriber connections: ${msg.redis}.`;
  },
  dropped(msg) { addError(`${msg.count} message(s) dropped: this page reads too slowly`); },
  stats: renderStats,
  error(msg) {
    addError(msg.error);
    if (msg.error.startsWith("publish to ")) {  // not "Published to ...": say it failed there
      const status = $("#publish-status");
      delete status.dataset.tabs;
      status.dataset.failed = "";
      status.textContent = msg.error;
    }
  },
};

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/json`;
  ws = new WebSocket(url);
  const badge = $("#ws-state");
  badge.textContent = badge.dataset.state = "connecting";
  ws.onopen = () => {
    retryDelay = 500;
    badge.textContent = badge.dataset.state = "open";
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    const handler = handlers[msg.type];
    if (handler) handler(msg);
  };
  ws.onclose = () => {
    badge.textContent = badge.dataset.state = "closed";
    // Nothing is known about Redis from here until the socket is back.
    $("#mpx-state").textContent = $("#mpx-state").dataset.state = "unknown";
    for (const row of document.querySelectorAll("#subs li")) {
      if (row.dataset.kind === "promise") { row.remove(); continue; }
      row.dataset.state = "disconnected";
      row.querySelector(".state").textContent = "disconnected";
    }
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 8000);
  };
}

// -- forms ----------------------------------------------------------------------------------

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (event) => { event.preventDefault(); fn(); });
}

onSubmit("#join-form", () => {
  const channel = $("#channel-name").value.trim();
  if (send({ op: "join", channel })) { wanted.channels.add(channel); $("#channel-name").value = ""; }
});
onSubmit("#pattern-form", () => {
  const pattern = $("#pattern").value.trim();
  if (send({ op: "psubscribe", pattern })) { wanted.patterns.add(pattern); $("#pattern").value = ""; }
});
onSubmit("#publish-form", () => {
  const box = $("#pub-message");
  if (send({ op: "publish", channel: $("#pub-channel").value.trim(), message: box.value })) {
    box.value = "";
    box.focus();
  }
});
onSubmit("#ask-form", () => {
  send({ op: "ask", suffix: $("#ask-suffix").value.trim(), question: $("#ask-question").value,
         timeout: Number($("#ask-timeout").value) });
});
onSubmit("#answer-form", () => {
  const box = $("#answer-message");
  if (send({ op: "answer", suffix: $("#answer-suffix").value.trim(), message: box.value })) {
    box.value = "";
  }
});

$("#numbers-start").addEventListener("click", () => send({ op: "numbers", action: "start" }));
$("#numbers-stop").addEventListener("click", () => send({ op: "numbers", action: "stop" }));

$("#restart-redis").addEventListener("click", async () => {
  const status = $("#restart-status");
  const reconnects = Number($('#stats tr[data-key="reconnects"] td')?.textContent) || 0;
  restart = { sawDown: false, reconnects };
  $("#restart-redis").disabled = true;
  status.dataset.phase = "killing";
  status.textContent = "Stopping the embedded Redis for 1.5 s…";
  try {
    const response = await fetch("/admin/restart-redis?downtime=1.5",
      { method: "POST", headers: { "X-Demo-Admin": "1" } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error);
    restart.pid = body.pid;
    renderRestart(null);
  } catch (err) {
    restart = null;
    $("#restart-redis").disabled = false;
    status.dataset.phase = "failed";
    status.textContent = `restart failed: ${err.message || err}`;
  }
});

connect();
