// uacreg console: plain JavaScript, no library, no build step. Everything it shows comes from
// the daemon's JSON-RPC (uacreg.overview, uacreg.rows, uacreg.row) on this same origin; actions
// go through Kamailio's uac.* methods. It polls every POLL_MS: simpler than Server-Sent Events
// behind proxies, and the token travels in a header (EventSource cannot send one).
"use strict";

const POLL_MS = 2000;
const PAGE = 50;
const TOKEN_KEY = "uacreg-token";
const STATES = ["registered", "registering", "authenticating", "pending", "retry_wait", "failed",
  "auth_failed", "realm_mismatch", "invalid", "disabled", "unregistering", "unregistered"];
const DETAIL_FIELDS = ["l_uuid", "l_username", "l_domain", "r_username", "r_domain", "realm",
  "registrar", "auth_username", "auth_password", "auth_ha1", "auth_proxy", "expires", "flags",
  "state", "last_code", "last_reason", "failures", "registers_sent", "next_refresh",
  "binding_expires", "granted_expires", "last_success", "reg_init", "contact_addr", "socket",
  "node", "error"];
const TIME_FIELDS = new Set(["next_refresh", "binding_expires", "last_success", "reg_init"]);

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let nextId = 1;
let timer = null;
let busy = false;
const query = { offset: 0, limit: PAGE, state: "", search: "", sort: "l_uuid", order: "asc" };
let openRow = null;

class Unauthorized extends Error {}

async function rpc(method, params) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const body = { jsonrpc: "2.0", id: nextId++, method };
  if (params !== undefined) body.params = params;
  const response = await fetch("/", { method: "POST", headers, body: JSON.stringify(body),
    cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("token refused");
  const answer = await response.json();
  if (answer.error) throw new Error(answer.error.message + " (" + answer.error.code + ")");
  return answer.result;
}

function text(el, value) { el.textContent = value == null ? "" : String(value); }
function number(n) { return Number(n || 0).toLocaleString("en-US"); }
function clock(unix) { return unix ? new Date(unix * 1000).toLocaleString() : ""; }
function from_now(unix) {
  if (!unix) return "";
  const secs = Math.round(unix - Date.now() / 1000);
  const abs = Math.abs(secs);
  const span = abs >= 3600 ? Math.floor(abs / 3600) + "h " + Math.floor((abs % 3600) / 60) + "m"
    : abs >= 60 ? Math.floor(abs / 60) + "m " + (abs % 60) + "s" : abs + "s";
  return secs >= 0 ? "in " + span : span + " ago";
}
function el(tag, cls, content) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (content !== undefined) text(node, content);
  return node;
}

// ---- login ----

function showLogin(error) {
  clearInterval(timer);
  timer = null;
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !error;
  text($("login-error"), error || "");
  $("token").focus();
}

async function start() {
  try {
    await refreshAll();
  } catch (e) {
    if (e instanceof Unauthorized) {
      showLogin(token ? "Wrong token: the daemon refused it." : "");
      return;
    }
    throw e;
  }
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = !token;
  if (!timer) timer = setInterval(poll, POLL_MS);
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    await refreshAll();
  } catch (e) {
    if (e instanceof Unauthorized) showLogin("The token is no longer accepted.");
    else text($("updated"), "not updated: " + e.message);
  } finally {
    busy = false;
  }
}

async function refreshAll() {
  const [overview] = await Promise.all([rpc("uacreg.overview"), refreshRows()]);
  drawOverview(overview);
  if (openRow) await refreshDetail();
  text($("updated"), "updated " + new Date().toLocaleTimeString());
}

// ---- overview ----

function drawOverview(o) {
  const counts = Object.assign({}, o.states, { invalid: o.invalid });
  $("total").dataset.count = o.total;
  text($("total"), number(o.total) + " rows");
  const bar = $("state-bar");
  bar.replaceChildren();
  for (const state of STATES) {
    const n = counts[state] || 0;
    const item = $("count-" + state);
    item.dataset.count = n;
    text(item, state + " " + number(n));
    if (n > 0 && o.total > 0) {
      const part = el("span", "st-" + state);
      part.style.width = (100 * n / o.total) + "%";
      part.title = state + ": " + number(n);
      bar.append(part);
    }
  }
  bar.setAttribute("aria-label", "Rows by state: " + STATES.filter((s) => counts[s])
    .map((s) => s + " " + number(counts[s])).join(", "));
  const db = o.database || {};
  const health = $("db-health");
  const ok = db.reachable !== false;
  health.classList.toggle("bad", !ok || !!db.last_error);
  text(health, (ok ? "database ok" : "database unreachable")
    + (db.engine ? " (" + db.engine + ")" : "")
    + (db.last_error ? ": last reload failed: " + db.last_error : ""));
  const cluster = o.cluster;
  text($("cluster"), cluster ? "cluster node " + cluster.node_id + ": "
    + (cluster.held || []).length + " of " + cluster.shards + " shards, "
    + (cluster.nodes || []).length + " nodes" + (cluster.last_error ? " (" + cluster.last_error
    + ")" : "") : "");
  drawHistory(o.history || [], o.sample_every_secs || 5);
}

function drawHistory(samples, every) {
  const svg = $("history");
  const NS = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const W = 720, H = 180, top = 8, bottom = 16;
  if (samples.length < 2) {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", 8); t.setAttribute("y", 20);
    t.textContent = "collecting samples…";
    svg.append(t);
    return;
  }
  const rate = (key) => samples.slice(1).map((s, i) =>
    Math.max(0, (s[key] - samples[i][key]) / Math.max(1, s.at - samples[i].at)));
  const series = [
    ["registered", samples.map((s) => s.registered).slice(1)],
    ["failing", samples.map((s) => s.failing).slice(1)],
    ["sent", rate("registers_sent")],
    ["responses", rate("responses")],
  ];
  const rows = Math.max(1, ...series[0][1], ...series[1][1]);
  const rates = Math.max(1, ...series[2][1], ...series[3][1]);
  const n = series[0][1].length;
  const x = (i) => (W * (720 - n + i)) / 719;
  for (const [name, values] of series) {
    const scale = name === "sent" || name === "responses" ? rates : rows;
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("class", name);
    line.setAttribute("points", values.map((v, i) =>
      x(i).toFixed(1) + "," + (top + (H - top - bottom) * (1 - v / scale)).toFixed(1)).join(" "));
    svg.append(line);
  }
  const label = (content, x, y, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = content;
    svg.append(t);
  };
  label("top: " + number(rows) + " rows, " + rates.toFixed(1) + " per s", 4, 12);
  label("−60 min", 4, H - 4);
  label(Math.max(1, Math.round(n * every / 60)) + " min sampled · now", W - 4, H - 4, "end");
  text($("history-now"), "Now: " + number(series[0][1][n - 1]) + " registered, "
    + number(series[1][1][n - 1]) + " failing, " + series[2][1][n - 1].toFixed(1)
    + " REGISTERs/s, " + series[3][1][n - 1].toFixed(1) + " responses/s.");
}

// ---- table ----

async function refreshRows() {
  const page = await rpc("uacreg.rows", query);
  const body = $("rows").tBodies[0];
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.lUuid : null;
  body.replaceChildren();
  for (const row of page.rows) {
    const tr = el("tr");
    tr.dataset.lUuid = row.l_uuid;
    tr.tabIndex = 0;
    if (row.l_uuid === openRow) tr.classList.add("selected");
    tr.append(el("td", "l_uuid", row.l_uuid));
    tr.append(el("td", "state st-" + row.state, row.state));
    tr.append(el("td", "aor", row.aor));
    tr.append(el("td", "realm wide", row.offered_realm
      ? row.realm + " (offered " + row.offered_realm + ")" : row.realm));
    // The last answer: its code and reason (the reason cut short on screen, whole on hover).
    const code = el("td", "code");
    if (row.last_code) code.append(el("span", "", row.last_code));
    if (row.last_reason) code.append(el("span", "reason", " " + row.last_reason));
    code.title = row.last_reason || "";
    tr.append(code);
    tr.append(el("td", "next wide", from_now(row.next_refresh)));
    tr.append(el("td", "failures wide", row.failures));
    body.append(tr);
    if (row.l_uuid === focused) tr.focus();
  }
  const info = $("page-info");
  info.dataset.offset = page.offset;
  info.dataset.limit = page.limit;
  info.dataset.total = page.total;
  text(info, page.total === 0 ? "no rows match"
    : number(page.offset + 1) + "–" + number(Math.min(page.offset + page.limit, page.total))
      + " of " + number(page.total));
  $("prev-page").disabled = page.offset === 0;
  $("next-page").disabled = page.offset + page.limit >= page.total;
  for (const b of document.querySelectorAll("th button")) {
    if (b.dataset.sort === query.sort) {
      b.setAttribute("aria-sort", query.order === "desc" ? "descending" : "ascending");
    } else {
      b.removeAttribute("aria-sort");
    }
  }
  return page;
}

function requery(changes) {
  Object.assign(query, changes);
  refreshRows().catch((e) => text($("updated"), "not updated: " + e.message));
}

// ---- row detail ----

async function openDetail(l_uuid) {
  openRow = l_uuid;
  text($("detail-message"), "");
  for (const tr of $("rows").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.lUuid === l_uuid);
  }
  await refreshDetail();
  $("detail").hidden = false;
  $("detail").scrollIntoView({ block: "nearest" });
  $("detail-close").focus();
}

async function refreshDetail() {
  let row;
  try {
    row = await rpc("uacreg.row", { l_uuid: openRow });
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    text($("detail-message"), "This row is gone: " + e.message);
    return;
  }
  const detail = $("detail");
  detail.dataset.lUuid = row.l_uuid;
  text($("detail-l-uuid"), row.l_uuid);
  const state = $("detail-state");
  text(state, row.state);
  state.className = "st-" + row.state;
  text($("detail-reason"), row.last_code ? "last answer " + row.last_code + " "
    + (row.last_reason || "") : (row.error || ""));
  text($("detail-expected-realm"), row.expected_realm || "");
  text($("detail-offered-realm"), row.offered_realm || "");
  const history = $("detail-history");
  history.replaceChildren();
  for (const change of row.history || []) {
    history.append(el("li", "", clock(change.at) + ": " + change.from + " → " + change.to
      + (change.code ? " (" + change.code + ")" : "")));
  }
  if (!(row.history || []).length) history.append(el("li", "muted", "none remembered"));
  const fields = $("detail-fields");
  fields.replaceChildren();
  for (const name of DETAIL_FIELDS) {
    if (!(name in row)) continue;
    const value = row[name];
    fields.append(el("dt", "", name));
    fields.append(el("dd", "", TIME_FIELDS.has(name) && value
      ? clock(value) + " (" + from_now(value) + ")" : value == null ? "" : value));
  }
}

const ACTIONS = {
  register: { method: "uac.reg_register", ask: null },
  unregister: { method: "uac.reg_unregister",
    ask: "Unregister this row? Its binding is taken back and calls to it stop." },
  enable: { method: "uac.reg_enable", ask: null },
  disable: { method: "uac.reg_disable",
    ask: "Disable this row? It is unregistered and stays off until enabled." },
  reload: { method: "uac.reg_refresh", ask: null },
};

function confirmAction(question) {
  const dialog = $("confirm");
  text($("confirm-text"), question);
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-yes").removeEventListener("click", yes);
      $("confirm-no").removeEventListener("click", no);
      dialog.removeEventListener("cancel", no);
      dialog.close();
      resolve(answer);
    };
    const yes = () => done(true);
    const no = () => done(false);
    $("confirm-yes").addEventListener("click", yes);
    $("confirm-no").addEventListener("click", no);
    dialog.addEventListener("cancel", no);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

async function act(name) {
  const action = ACTIONS[name];
  const l_uuid = openRow;
  if (!action || !l_uuid) return;
  if (action.ask && !(await confirmAction(action.ask + " (" + l_uuid + ")"))) return;
  const params = name === "reload" ? [l_uuid] : ["l_uuid", l_uuid];
  try {
    await rpc(action.method, params);
    text($("detail-message"), name + ": done");
  } catch (e) {
    if (e instanceof Unauthorized) { showLogin("The token is no longer accepted."); return; }
    text($("detail-message"), name + " failed: " + e.message);
  }
  await poll();
}

// ---- wiring ----

function wire() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    start().catch((e) => showLogin(e.message));
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    showLogin("");
  });
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => requery({ search: $("search").value, offset: 0 }), 300);
  });
  $("search").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      clearTimeout(typing);
      requery({ search: $("search").value, offset: 0 });
    }
  });
  $("state-filter").addEventListener("change", () =>
    requery({ state: $("state-filter").value, offset: 0 }));
  $("prev-page").addEventListener("click", () =>
    requery({ offset: Math.max(0, query.offset - query.limit) }));
  $("next-page").addEventListener("click", () => requery({ offset: query.offset + query.limit }));
  for (const b of document.querySelectorAll("th button")) {
    b.addEventListener("click", () => {
      const same = query.sort === b.dataset.sort;
      requery({ sort: b.dataset.sort, order: same && query.order === "asc" ? "desc" : "asc",
        offset: 0 });
    });
  }
  const body = $("rows").tBodies[0];
  const rowOf = (event) => event.target.closest("tr[data-l-uuid]");
  body.addEventListener("click", (event) => {
    const tr = rowOf(event);
    if (tr) openDetail(tr.dataset.lUuid);
  });
  body.addEventListener("keydown", (event) => {
    const tr = rowOf(event);
    if (!tr) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openDetail(tr.dataset.lUuid);
    } else if (event.key === "ArrowDown" && tr.nextElementSibling) {
      event.preventDefault();
      tr.nextElementSibling.focus();
    } else if (event.key === "ArrowUp" && tr.previousElementSibling) {
      event.preventDefault();
      tr.previousElementSibling.focus();
    }
  });
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("detail").hidden && !$("confirm").open) closeDetail();
  });
  for (const b of document.querySelectorAll("#detail [data-action]")) {
    b.addEventListener("click", () => act(b.dataset.action));
  }
}

function closeDetail() {
  const was = openRow;
  openRow = null;
  $("detail").hidden = true;
  $("detail").dataset.lUuid = "";
  const tr = document.querySelector('tr[data-l-uuid="' + CSS.escape(was || "") + '"]');
  if (tr) { tr.classList.remove("selected"); tr.focus(); }
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  start().catch((e) => showLogin(e.message));
});
