// The redismpx demo page: a thin view over the JSON protocol of /ws/json.
"use strict";

const $ = (sel) => document.querySelector(sel);
const MAX_LOG = 200;

let ws = null;
let retryDelay = 500;
let prefix = "promise:";
const wanted = { channels: new Set(), patterns: new Set() }; // re-sent after a reconnect
const promiseTimers = new Map(); // promise id -> interval id of its countdown

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

function pushLog(list, item) {
  list.prepend(item);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

function addError(text) {
  pushLog($("#errors"), el("li", { className: "error" }, `${new Date().toLocaleTimeString()} ${text}`));
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
      el("span", { className: "question muted" }, msg.question || ""),
      el("span", { className: "detail" }, ""),
      el("span", { className: "state" }, ""));
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
      const left = Math.max(0, msg.deadline - Date.now() / 1000);
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
    const input = el("input", { placeholder: "your answer", className: "answer-text" });
    const button = el("button", { type: "button", className: "answer-button" }, "Answer");
    button.addEventListener("click", () => {
      send({ op: "answer", suffix: q.suffix, message: input.value });
    });
    list.append(el("li", { className: "question", dataset: { suffix: q.suffix } },
      el("span", { className: "name" }, q.suffix),
      el("span", { className: "question-text muted" }, q.question || "(no text)"),
      input, button));
  }
  for (const li of [...list.children]) if (!seen.has(li.dataset.suffix)) li.remove();
}

// -- stats ----------------------------------------------------------------------------------

function renderStats(msg) {
  const body = $("#stats tbody");
  for (const [key, value] of Object.entries(msg.stats)) {
    let row = body.querySelector(`tr[data-key="${key}"]`);
    if (!row) {
      row = el("tr", { dataset: { key } }, el("th", {}, key), el("td", {}, ""));
      body.append(row);
    }
    row.querySelector("td").textContent = value === null ? "-" : String(value);
  }
  const badge = $("#mpx-state");
  badge.textContent = badge.dataset.state = msg.stats.state;
  $("#sockets").textContent = String(msg.sockets);
  $("#restart-redis").hidden = !msg.redis.embedded;
  renderQuestions(msg.questions);
}

// -- the socket -----------------------------------------------------------------------------

const handlers = {
  welcome(msg) {
    prefix = msg.prefix;
    $("#prefix").textContent = prefix;
    for (const c of wanted.channels) send({ op: "join", channel: c });
    for (const p of wanted.patterns) send({ op: "psubscribe", pattern: p });
  },
  message(msg) {
    const via = msg.pattern ? ` (via ${msg.pattern})` : "";
    pushLog($("#messages"), el("li",
      { className: "msg", dataset: { channel: msg.channel, pattern: msg.pattern || "" } },
      el("span", { className: "name" }, msg.channel),
      el("span", { className: "text" }, msg.message),
      el("span", { className: "muted" }, via)));
  },
  sub(msg) { setSubState(msg.kind, msg.name, msg.state, msg.error); },
  promise: onPromise,
  published(msg) {
    $("#publish-status").textContent = `published to ${msg.channel}: ${msg.receivers} receiver(s)`;
  },
  dropped(msg) { addError(`${msg.count} message(s) dropped: this page reads too slowly`); },
  stats: renderStats,
  error(msg) { addError(msg.error); },
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
  send({ op: "publish", channel: $("#pub-channel").value.trim(), message: $("#pub-message").value });
});
onSubmit("#ask-form", () => {
  send({ op: "ask", suffix: $("#ask-suffix").value.trim(), question: $("#ask-question").value,
         timeout: Number($("#ask-timeout").value) });
});
onSubmit("#answer-form", () => {
  send({ op: "answer", suffix: $("#answer-suffix").value.trim(), message: $("#answer-message").value });
});

$("#restart-redis").addEventListener("click", async () => {
  const status = $("#restart-status");
  status.textContent = "restarting...";
  try {
    const response = await fetch("/admin/restart-redis?downtime=1.5",
      { method: "POST", headers: { "X-Demo-Admin": "1" } });
    const body = await response.json();
    status.textContent = response.ok ? `restarted (pid ${body.pid})` : body.error;
  } catch (err) {
    status.textContent = `restart failed: ${err}`;
  }
});

connect();
