// marketfeed dashboard: one /ws client (docs/PROTOCOL.md) plus a /status poll.
// Plain DOM code, no build step. Every value from the network is inserted
// with textContent or setAttribute, never parsed as HTML.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  // Tokens are best given in the fragment (#token=...&operator_token=...):
  // a fragment never leaves the browser, so it reaches no log and no Referer.
  const secrets = new URLSearchParams(location.hash.slice(1));
  const WS_TOKEN = secrets.get("token") || params.get("token");
  const OPERATOR_TOKEN = secrets.get("operator_token");

  // The server flags stale data itself (STALE_AFTER_SECONDS, 15 s by default),
  // but it cannot tell us while we are cut off from it: past this age the page
  // says "stale" on its own. `?stale_after=N` changes it.
  const CLIENT_STALE_AFTER_S = positive(params.get("stale_after"), 30);
  const STATUS_POLL_MS = 3000;
  // PROTOCOL.md's advice: 0.5 s doubling to 30 s, times a random [0.5, 1].
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const HISTORY_ROWS = 8;
  const CONN_LOG_ROWS = 6;
  const SLOW_PARTS = ["indicators", "indices"];

  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
  const ui = {
    conn: $("conn-state"), banner: $("stale-banner"), simulated: $("simulated-banner"), age: $("data-age"),
    prices: $("price-table"), missing: $("missing"), market: $("market"), sentiment: $("sentiment"),
    sections: $("sections"),
    servedBy: $("served-by"), leader: $("leader"), epoch: $("epoch"), seq: $("seq"), lock: $("lock"),
    nodes: $("nodes"), history: $("leader-history"), connLog: $("conn-log"), dropped: $("dropped"),
  };

  const state = {
    key: null,            // [epoch, seq] of the last snapshot kept; survives reconnects
    fetchedAtMs: null,
    serverStale: false,
    leader: null,
    servedBy: null,
    ws: null,
    attempt: 0,           // failed attempts since the last open, for the backoff
    retryAt: 0,
    closeCode: null,
    announce: false,      // log who serves us on the first message after an open
    dropped: 0,
    clockOffsetMs: 0,     // server clock minus ours, from a ping on each connect
    pingSentMs: 0,
    rows: new Map(),      // symbol -> <tr>, kept so a price change can flash
    history: new Map(),   // "event|node|epoch" -> {event, node, epoch, ts, reason}
    sources: {},          // the last snapshot's data.sources
    keptOnly: false,      // ...in which every section was stale
    noNewSnapshot: false, // the server said the snapshot we hold is old
  };

  // --- the WebSocket -------------------------------------------------------

  function wsUrl() {
    const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    return WS_TOKEN ? `${base}?token=${encodeURIComponent(WS_TOKEN)}` : base;
  }

  function connect() {
    state.closeCode = null;
    setConn("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      logConn(`cannot open: ${err.message}`);
      scheduleReconnect(null);
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      state.attempt = 0;
      state.announce = true;
      setConn("live", "live");
      // Ages are measured against the server's clock: a phone whose clock is
      // off by a minute must not call fresh data stale.
      state.pingSentMs = Date.now();
      ws.send(JSON.stringify({op: "ping", id: "clock"}));
    };
    ws.onmessage = (ev) => onMessage(ev.data);
    // An error is always followed by close, which does the work.
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      logConn(`closed ${ev.code}${CLOSE_REASONS[ev.code] ? ` (${CLOSE_REASONS[ev.code]})` : ""}`);
      scheduleReconnect(ev.code);
    };
  }

  const CLOSE_REASONS = {
    1000: "normal", 1001: "server going away", 1006: "connection lost", 1008: "policy",
    1009: "message too big", 1011: "server error",
  };

  function scheduleReconnect(code) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(state.attempt, 16));
    const delay = base * (0.5 + Math.random() * 0.5);
    state.attempt += 1;
    state.closeCode = code;
    state.retryAt = Date.now() + delay;
    setTimeout(connect, delay);
    renderReconnect();
  }

  function renderReconnect() {
    if (state.ws || !state.retryAt) return;
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    const closed = state.closeCode == null ? "closed" : `closed ${state.closeCode}`;
    setConn("reconnecting", `${closed} · reconnecting in ${left} s`);
  }

  function setConn(name, text) {
    ui.conn.dataset.state = name;
    ui.conn.textContent = text;
    document.body.dataset.conn = name;
  }

  // --- messages ------------------------------------------------------------

  function onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!isObject(msg)) return;
    // served_by describes this connection, so take it even from a message
    // whose data we drop (the repeat we get after a reconnect).
    if (typeof msg.served_by === "string") setServedBy(msg.served_by);
    if (msg.type === "snapshot") onSnapshot(msg);
    else if (msg.type === "stale") onStale(msg);
    else if (msg.type === "pong" && msg.id === "clock") onClock(msg);
  }

  function onClock(m) {
    const server = Date.parse(m.ts);
    const now = Date.now();
    if (!Number.isFinite(server) || !state.pingSentMs) return;
    // The server read its clock between our send and receive, so the offset
    // lies in [lo, hi]. Take the value nearest zero: clocks that agree (as
    // far as this round trip can tell) are left alone; a skew beyond the
    // round trip is corrected to within it.
    const lo = server - now;
    const hi = server - state.pingSentMs;
    state.clockOffsetMs = lo > 0 ? lo : hi < 0 ? hi : 0;
    renderAge();
    renderStale();
  }

  function serverNow() {
    return Date.now() + state.clockOffsetMs;
  }

  function compareKey(epoch, seq) {
    if (!state.key) return 1;
    const [e, s] = state.key;
    return epoch !== e ? Math.sign(epoch - e) : Math.sign(seq - s);
  }

  function onSnapshot(m) {
    if (!Number.isFinite(m.epoch) || !Number.isFinite(m.seq)) return;
    const order = compareKey(m.epoch, m.seq);
    if (order <= 0) {
      state.dropped += 1;
      ui.dropped.textContent = String(state.dropped);
      // The same snapshot re-sent carries the server's current view of its age.
      if (order === 0 && typeof m.stale === "boolean") {
        state.serverStale = m.stale;
        state.noNewSnapshot = m.stale && !state.keptOnly;
      }
      renderStale();
      return;
    }
    state.key = [m.epoch, m.seq];
    const fetched = Date.parse(m.fetched_at);
    state.fetchedAtMs = Number.isFinite(fetched) ? fetched : serverNow();
    state.serverStale = m.stale === true;
    state.noNewSnapshot = false;
    ui.epoch.textContent = String(m.epoch);
    ui.seq.textContent = String(m.seq);
    if (typeof m.leader === "string" && m.leader !== state.leader) {
      state.leader = m.leader;
      ui.leader.textContent = m.leader;
      addHistory({event: "seen", node: m.leader, epoch: m.epoch, ts: serverNow() / 1000});
      renderHistory();
    }
    const data = isObject(m.data) ? m.data : {};
    state.sources = isObject(data.sources) ? data.sources : {};
    ui.simulated.hidden = data.simulated !== true;
    document.body.classList.toggle("simulated", data.simulated === true);
    // Every section stale (as the server judged them): new snapshots, old values.
    // Hourly sections (RSI, index ETFs) stay fresh long after prices stop: they do not count.
    const flags = Object.values(state.sources).flatMap((src) =>
      isObject(src) && isObject(src.sections)
        ? Object.entries(src.sections).filter(([part]) => !SLOW_PARTS.includes(part)).map(([, sec]) => sec.stale === true)
        : []);
    state.keptOnly = flags.length > 0 && flags.every(Boolean);
    renderPrices(data);
    renderMarket(data.market);
    renderIndicators(data.indicators);
    renderSentiment(data.sentiment);
    renderMissing(data);
    renderAge();
    renderStale();
  }

  // Each section (a provider's prices, the market totals, the sentiment) has
  // its own age: a failed or not-yet-due call keeps the last good value.
  function sectionInfo(source, part) {
    // A simulated section's source is "simulated:<provider>".
    const src = state.sources[source.replace(/^simulated:/, "")];
    const sec = isObject(src) && isObject(src.sections) ? src.sections[part] : null;
    if (!isObject(sec)) return null;
    const at = Date.parse(sec.fetched_at);
    return {ageS: Number.isFinite(at) ? Math.max(0, (serverNow() - at) / 1000) : null, stale: sec.stale === true};
  }

  function newestSectionAge() {
    let newest = null;
    for (const [name, src] of Object.entries(state.sources || {})) {
      for (const part of isObject(src) && isObject(src.sections) ? Object.keys(src.sections) : []) {
        const info = sectionInfo(name, part);
        if (info && info.ageS != null && (newest == null || info.ageS < newest)) newest = info.ageS;
      }
    }
    return newest;
  }

  function renderSections() {
    const rows = [];
    for (const [name, src] of Object.entries(state.sources || {})) {
      if (!isObject(src)) continue;
      const parts = isObject(src.sections) ? Object.keys(src.sections) : [];
      for (const part of parts.length ? parts : [null]) {
        const li = document.createElement("li");
        li.dataset.testid = `section-${name}-${part || "none"}`;
        const info = part ? sectionInfo(name, part) : null;
        li.dataset.stale = String(Boolean(info && info.stale));
        li.classList.toggle("stale", Boolean(info && info.stale));
        li.classList.toggle("failing", src.ok === false);
        const age = info && info.ageS != null ? `${duration(info.ageS)} old` : "no data";
        const failing = src.ok === false ? ` · ${typeof src.error === "string" ? src.error : "failing"}` : "";
        const blocked = Number.isFinite(src.blocked_for_s) ? ` for ${duration(src.blocked_for_s)}` : "";
        li.append(cell("strong", `${name}${part ? " " + part : ""}`),
          ` ${age}${info && info.stale ? " (stale)" : ""}${failing}${blocked}`);
        rows.push(li);
      }
    }
    if (rows.length) ui.sections.replaceChildren(...rows);
  }

  function onStale(m) {
    // A notice about a snapshot older than ours says nothing about ours.
    if (Number.isFinite(m.epoch) && Number.isFinite(m.seq) && compareKey(m.epoch, m.seq) < 0) return;
    state.serverStale = true;
    state.noNewSnapshot = true;
    renderStale();
  }

  function setServedBy(node) {
    if (state.announce) {
      state.announce = false;
      logConn(`live, served by ${node}`);
    }
    if (node === state.servedBy) return;
    state.servedBy = node;
    ui.servedBy.textContent = node;
  }

  // --- rendering -----------------------------------------------------------

  function renderPrices(data) {
    const prices = isObject(data.prices) ? data.prices : {};
    const symbols = Object.keys(prices);
    // A symbol no provider priced still gets a row, marked as missing.
    for (const part of strings(data.missing)) {
      const sym = part.startsWith("prices.") ? part.slice(7) : null;
      if (sym && !symbols.includes(sym)) symbols.push(sym);
    }
    const keep = new Set(symbols);
    for (const [sym, row] of state.rows) {
      if (!keep.has(sym)) {
        row.remove();
        state.rows.delete(sym);
      }
    }
    for (const placeholder of ui.prices.querySelectorAll(".placeholder")) placeholder.remove();
    for (const sym of symbols) {
      const row = state.rows.get(sym) || makeRow(sym);
      ui.prices.appendChild(row); // appending an existing row moves it: keeps SYMBOLS order
      updateRow(row, isObject(prices[sym]) ? prices[sym] : null);
    }
    if (!symbols.length) {
      const tr = document.createElement("tr");
      tr.className = "placeholder";
      const td = cell("td", "no prices in this snapshot");
      td.colSpan = 3;
      tr.appendChild(td);
      ui.prices.appendChild(tr);
    }
    const first = symbols.find((s) => isObject(prices[s]));
    document.title = first ? `${first} ${usd(prices[first].usd)} · marketfeed` : "marketfeed";
  }

  function makeRow(sym) {
    const tr = document.createElement("tr");
    tr.dataset.testid = `price-row-${sym}`;
    tr.dataset.symbol = sym;
    const th = cell("th", sym);
    th.scope = "row";
    const source = cell("small", "");
    th.append(" ", source);
    const price = cell("td", "–");
    price.className = "num";
    price.dataset.testid = `price-${sym}`;
    const change = cell("td", "–");
    change.className = "num change";
    change.dataset.testid = `change-${sym}`;
    tr.append(th, price, change);
    state.rows.set(sym, tr);
    return tr;
  }

  function updateRow(tr, quote) {
    const [th, price, change] = tr.children;
    const prev = Number(tr.dataset.usd);
    if (!quote || !Number.isFinite(quote.usd)) {
      tr.classList.add("absent");
      price.textContent = "no price";
      change.textContent = "–";
      change.classList.remove("up", "down");
      th.lastChild.textContent = "";
      delete tr.dataset.usd;
      return;
    }
    tr.classList.remove("absent");
    price.textContent = usd(quote.usd);
    const info = typeof quote.source === "string" ? sectionInfo(quote.source, "prices") : null;
    tr.classList.toggle("stale", Boolean(info && info.stale));
    const at = Date.parse(quote.fetched_at);
    const age = Number.isFinite(at) ? ` · ${duration(Math.max(0, (serverNow() - at) / 1000))}` : "";
    th.lastChild.textContent = typeof quote.source === "string" ? `${quote.source}${age}` : "";
    const ch = quote.change_24h;
    change.textContent = Number.isFinite(ch) ? pct(ch, true) : "–";
    change.classList.toggle("up", Number.isFinite(ch) && ch > 0);
    change.classList.toggle("down", Number.isFinite(ch) && ch < 0);
    if (Number.isFinite(prev) && prev !== quote.usd) flash(price, quote.usd > prev ? "tick-up" : "tick-down");
    tr.dataset.usd = String(quote.usd);
  }

  function flash(node, cls) {
    node.classList.remove("tick-up", "tick-down");
    void node.offsetWidth; // restart the CSS animation
    node.classList.add(cls);
  }

  function renderMarket(market) {
    const m = isObject(market) ? market : null;
    const set = (field, text) => { ui.market.querySelector(`[data-field="${field}"]`).textContent = text; };
    ui.market.classList.toggle("absent", !m);
    set("cap", m ? big(m.total_market_cap_usd) : "unavailable");
    set("volume", m ? big(m.total_volume_usd) : "unavailable");
    set("dominance", m && Number.isFinite(m.btc_dominance) ? pct(m.btc_dominance, false) : "–");
    set("cap-change", m && Number.isFinite(m.market_cap_change_24h) ? pct(m.market_cap_change_24h, true) : "–");
    set("eth-dominance", m && Number.isFinite(m.eth_dominance) ? pct(m.eth_dominance, false) : "–");
  }

  function renderIndicators(indicators) {
    const rsi = isObject(indicators) && Number.isFinite(indicators.btc_rsi_14) ? indicators.btc_rsi_14 : null;
    ui.market.querySelector('[data-field="rsi"]').textContent = rsi === null ? "–" : rsi.toFixed(1);
  }

  function renderSentiment(sentiment) {
    const s = isObject(sentiment) && Number.isFinite(sentiment.value) ? sentiment : null;
    ui.sentiment.classList.toggle("absent", !s);
    const label = s && typeof s.label === "string" ? ` ${s.label}` : "";
    ui.sentiment.querySelector(".value").textContent = s ? `${s.value} / 100${label}` : "unavailable";
    const fill = ui.sentiment.querySelector(".fill");
    fill.style.width = s ? `${Math.max(0, Math.min(100, s.value))}%` : "0";
  }

  function renderMissing(data) {
    const parts = strings(data.missing);
    const failures = [];
    if (isObject(data.sources)) {
      for (const [name, src] of Object.entries(data.sources)) {
        if (isObject(src) && src.ok === false) {
          failures.push(`${name}: ${typeof src.error === "string" ? src.error : "failed"}`);
        }
      }
    }
    ui.missing.hidden = !parts.length && !failures.length;
    const text = parts.length ? `Not in this snapshot: ${parts.join(", ")}.` : "";
    ui.missing.textContent = failures.length ? `${text} Sources failing: ${failures.join(", ")}.`.trim() : text;
  }

  function ageSeconds() {
    return state.fetchedAtMs == null ? null : Math.max(0, (serverNow() - state.fetchedAtMs) / 1000);
  }

  function renderAge() {
    const age = ageSeconds();
    ui.age.textContent = age == null ? "–" : duration(age);
    renderSections();
  }

  function renderStale() {
    const age = ageSeconds();
    let text = "";
    const newest = newestSectionAge();
    if (age != null && state.serverStale && state.keptOnly && !state.noNewSnapshot && newest != null) {
      // New snapshots arrive, but only with values kept from before.
      text = `Stale data: the market APIs are failing; showing the last good values ` +
        `(the newest ${duration(newest)} old).`;
    } else if (age != null && state.serverStale) {
      text = `Stale data: no new snapshot for ${duration(age)}. The market APIs may be failing; ` +
        "showing the last known values.";
    } else if (age != null && age > CLIENT_STALE_AFTER_S) {
      text = `Stale data: the last snapshot is ${duration(age)} old` +
        (state.ws && state.ws.readyState === WebSocket.OPEN ? "." : " and the service is unreachable.");
    }
    ui.banner.hidden = !text;
    ui.banner.textContent = text;
    document.body.classList.toggle("is-stale", Boolean(text));
  }

  // --- cluster view and leadership history -----------------------------------

  async function pollStatus() {
    let next = STATUS_POLL_MS;
    try {
      const headers = {Accept: "application/json"};
      if (OPERATOR_TOKEN) headers.Authorization = `Bearer ${OPERATOR_TOKEN}`;
      const res = await fetch("/status?events=20", {cache: "no-store", headers});
      if (res.status === 401) {
        // The cluster view is for operators here (OPERATOR_TOKEN is set).
        ui.lock.textContent = "operator view: open this page with #operator_token=… to see it";
        next = STATUS_POLL_MS * 10;
        return;
      }
      const body = await res.json();
      if (isObject(body.cluster)) applyCluster(body.cluster);
      else ui.lock.textContent = typeof body.error === "string" ? body.error : "cluster view unavailable";
    } catch {
      ui.lock.textContent = "cluster view unavailable";
    } finally {
      setTimeout(pollStatus, next);
    }
  }

  function applyCluster(c) {
    if (typeof c.leader === "string") {
      const ttl = Number.isFinite(c.lock_ttl_ms) ? `, expires in ${(c.lock_ttl_ms / 1000).toFixed(1)} s` : "";
      ui.lock.textContent = `held by ${c.leader}${ttl}`;
    } else {
      ui.lock.textContent = "free: an election is due";
    }
    renderNodes(c.nodes, c.nodes_error);
    for (const e of Array.isArray(c.events) ? c.events : []) {
      if (isObject(e) && typeof e.event === "string" && typeof e.node === "string") addHistory(e);
    }
    renderHistory();
  }

  // The live nodes (from presence, docs/RELIABILITY.md), the leader first.
  function renderNodes(nodes, error) {
    if (!Array.isArray(nodes)) {
      ui.nodes.replaceChildren(cell("li", typeof error === "string" ? "unknown: " + error : "unknown"));
      return;
    }
    if (!nodes.length) {
      ui.nodes.replaceChildren(cell("li", "none present"));
      return;
    }
    ui.nodes.replaceChildren(...nodes.filter(isObject).map((n) => {
      const li = document.createElement("li");
      const role = typeof n.role === "string" ? n.role : "?";
      li.dataset.role = role;
      li.className = `node-${role}`;
      const clients = Number.isFinite(n.clients) ? `${n.clients} client${n.clients === 1 ? "" : "s"}` : "? clients";
      li.append(cell("code", String(n.node)), " ", cell("strong", role), ` · ${clients}`);
      return li;
    }));
  }

  function addHistory(e) {
    const epoch = Number.isFinite(e.epoch) ? e.epoch : null;
    const entry = {event: e.event, node: e.node, epoch, ts: Number(e.ts) || serverNow() / 1000,
                   reason: typeof e.reason === "string" ? e.reason : ""};
    const id = `${entry.event}|${entry.node}|${epoch}`;
    if (!state.history.has(id)) state.history.set(id, entry);
    if (state.history.size > 100) state.history.delete(state.history.keys().next().value);
  }

  function renderHistory() {
    const all = [...state.history.values()];
    // A leader seen in the data is shown only until /status reports its election.
    const acquired = new Set(all.filter((e) => e.event === "acquired").map((e) => `${e.node}|${e.epoch}`));
    const rows = all.filter((e) => e.event !== "seen" || !acquired.has(`${e.node}|${e.epoch}`))
      .sort((a, b) => b.ts - a.ts).slice(0, HISTORY_ROWS);
    ui.history.replaceChildren(...rows.map((e) => {
      const li = document.createElement("li");
      li.className = `ev-${e.event}`;
      const what = e.event === "seen" ? "leading (seen in data)" : e.event;
      li.append(cell("time", clock(e.ts * 1000 - state.clockOffsetMs)), " ", cell("strong", what), " ", cell("code", e.node),
        e.epoch == null ? "" : ` epoch ${e.epoch}`, e.reason ? ` (${e.reason})` : "");
      return li;
    }));
  }

  function logConn(text) {
    const li = document.createElement("li");
    li.append(cell("time", clock(Date.now())), ` ${text}`);
    ui.connLog.prepend(li);
    while (ui.connLog.children.length > CONN_LOG_ROWS) ui.connLog.lastChild.remove();
  }

  // --- formatting ------------------------------------------------------------

  const money = new Map();
  function usd(v) {
    if (!Number.isFinite(v)) return "–";
    // Cents for big prices, more digits for coins worth a dollar or less.
    const digits = v >= 100 ? 2 : v >= 1 ? 4 : 6;
    if (!money.has(digits)) {
      money.set(digits, new Intl.NumberFormat("en-US", {style: "currency", currency: "USD",
        minimumFractionDigits: Math.min(digits, 2), maximumFractionDigits: digits}));
    }
    return money.get(digits).format(v);
  }

  function big(v) {
    if (!Number.isFinite(v)) return "–";
    for (const [div, unit] of [[1e12, "T"], [1e9, "B"], [1e6, "M"]]) {
      if (Math.abs(v) >= div) return `$${(v / div).toFixed(2)} ${unit}`;
    }
    return usd(v);
  }

  function pct(v, signed) {
    return `${signed && v > 0 ? "+" : ""}${v.toFixed(2)} %`;
  }

  function duration(s) {
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], {hour12: false});
  }

  function cell(tag, text) {
    const node = document.createElement(tag);
    node.textContent = text;
    return node;
  }

  function isObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  function strings(v) {
    return Array.isArray(v) ? v.filter((s) => typeof s === "string") : [];
  }

  function positive(text, fallback) {
    const n = Number(text);
    return text && Number.isFinite(n) && n > 0 ? n : fallback;
  }

  // --- start -----------------------------------------------------------------

  connect();
  pollStatus();
  // One ticker for everything that changes with time alone.
  setInterval(() => {
    renderAge();
    renderStale();
    renderReconnect();
  }, 1000);
})();
