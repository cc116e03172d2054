// opswire dashboard: the reference browser client of protocol v1.
// Plain JS; its one dependency is uPlot (the global `uPlot`, vendored in
// src/web/vendor/). See docs/dashboard.md for how it works.
"use strict";
(() => {
  const TOKEN_KEY = "opswire.token";
  const STREAMS = ["metrics", "logs", "alerts"];
  const RESUMABLE = ["logs", "alerts"];
  const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
  const SEVERITY = { critical: 0, error: 1, warning: 2, info: 3 };
  const WINDOW_S = 300; // chart history: 5 minutes
  const MAX_LOGS = 2000; // per team, in memory
  const MAX_LOG_ROWS = 500; // in the DOM
  const RESOLVED_TTL_MS = 60000; // resolved alerts fade out, then go
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const PING_EVERY_MS = 15000;
  // Fleet view (docs/dashboard.md "Fleet view").
  const SPARK_POINTS = 30; // per tile: 30 samples, half a minute at 1 Hz
  const WARN_PCT = 80; // CPU, memory or the fullest disk at or above: warn
  const CRIT_PCT = 90; // ... at or above: crit
  const STALE_MIN_MS = 10000; // a sample older than max(this, 5 ticks) is stale
  const AUTO_DETAIL_MAX = 4; // a team of at most this many hosts shows every host's charts too
  const RANK = { crit: 4, stale: 3, warn: 2, ok: 1 };

  // ---- small DOM helpers -------------------------------------------------
  const $ = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k === "testid") e.dataset.testid = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of kids) if (c != null) e.append(c);
    return e;
  }
  const store = {
    get(k) { try { return sessionStorage.getItem(k); } catch { return null; } },
    set(k, v) { try { sessionStorage.setItem(k, v); } catch { /* storage disabled */ } },
    del(k) { try { sessionStorage.removeItem(k); } catch { /* storage disabled */ } },
  };

  // ---- formatting --------------------------------------------------------
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    n = Number(n) || 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${u[i]}`;
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }
  function short(n) {
    const u = ["", "K", "M", "G", "T"];
    let i = 0;
    n = Number(n) || 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1024; i++; }
    return `${n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)}${u[i]}`;
  }
  const pct = (v) => `${(Number(v) || 0).toFixed(1)}%`;

  // ---- state -------------------------------------------------------------
  const S = {
    info: null,
    tickMs: 1000,
    token: store.get(TOKEN_KEY),
    ws: null,
    live: false,
    attempt: 0,
    retryTimer: 0,
    retryAt: 0,
    retryFn: null,
    why: "",
    authError: "",
    welcome: null,
    teams: [],
    team: null, // the team on screen
    subTeam: null, // the team subscribed on the current socket
    nextId: 1,
    pending: new Map(), // op id -> what it was
    data: new Map(), // team -> TeamData
    filter: { level: "", source: "" },
    paused: false,
    unseen: 0,
    clockOffsetUs: 0, // server clock minus ours, from ping/pong
    lastMsgAt: 0,
    lastPingAt: 0,
    cards: new Map(), // host -> card of the team on screen
    tiles: new Map(), // host -> fleet tile of the team on screen
    detail: null, // null: the fleet; else the host names opened from it
    view: "summary", // the metrics view asked of the server ("summary" or "hosts")
    fleetSort: "worst",
    fleetFilter: "",
    fleetRaf: 0,
    fleetOrder: "",
    alertEls: new Map(), // fingerprint -> <li> of the team on screen
    silenceUi: new Map(), // team/fingerprint -> {result, error, open}
  };

  function teamData(team) {
    let d = S.data.get(team);
    if (!d) {
      d = {
        hosts: new Map(), // host -> {pts: [{t,cpu,mem,disk,rx,tx}], snap}
        current: [], // host names in the newest full or named-hosts frame
        fleet: new Map(), // host -> {sum, cpu: [], mem: [], state, score, dirty}
        fleetAt: 0, // ts of the newest fleet rows
        conns: null,
        newestTs: 0, // µs
        logs: [],
        sources: new Set(),
        alerts: new Map(), // fingerprint -> alert data + epoch, seq, ts
        pos: { logs: null, alerts: null }, // last {epoch, seq} received
      };
      S.data.set(team, d);
    }
    return d;
  }

  const nowUs = () => Date.now() * 1000 + S.clockOffsetUs;

  // ---- connection --------------------------------------------------------
  function setConn(state, text) {
    const c = $("conn-state");
    c.dataset.state = state;
    c.textContent = text;
    $("retry-now").hidden = state !== "reconnecting";
    if (state === "reconnecting") {
      c.dataset.retryAt = String(S.retryAt);
      c.dataset.attempt = String(S.attempt);
    } else {
      delete c.dataset.retryAt;
    }
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text;
    n.hidden = !text;
  }

  async function loadInfo() {
    setConn("connecting", "connecting…");
    try {
      const r = await fetch("/api/v1/info", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      S.info = await r.json();
      performance.mark("opswire:info");
    } catch (e) {
      scheduleRetry(`server unreachable (${e.message || e})`, loadInfo);
      return;
    }
    S.attempt = 0;
    S.tickMs = Number(S.info.tick_ms) || 1000;
    if (S.info.auth_required && !S.token) {
      showSignin("");
      return;
    }
    connect();
  }

  function connect() {
    clearTimeout(S.retryTimer);
    S.retryTimer = 0;
    if (S.ws) return;
    if (!S.info) { loadInfo(); return; }
    S.authError = "";
    setConn("connecting", S.attempt ? `reconnecting (attempt ${S.attempt})…` : "connecting…");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    const ws = new WebSocket(url, "opswire.v1");
    S.ws = ws;
    S.lastMsgAt = Date.now();
    ws.onopen = () => {
      if (S.ws !== ws) return;
      // Browsers cannot set headers: the token goes in the first frame.
      if (S.info.auth_required) send({ op: "auth", token: S.token }, { kind: "auth" });
    };
    ws.onmessage = (ev) => {
      if (S.ws !== ws) return;
      S.lastMsgAt = Date.now();
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      onFrame(f);
    };
    ws.onclose = (ev) => { if (S.ws === ws) onClose(ev); };
  }

  /// Forgets the socket without waiting for its close handshake.
  function dropSocket(code, reason) {
    const ws = S.ws;
    S.ws = null;
    S.live = false;
    S.subTeam = null;
    failPending("connection closed");
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    }
  }

  function failPending(why) {
    for (const [, m] of S.pending) {
      if (m.kind === "silence") silenceResult(m.team, m.fp, `Not sent: ${why}. Try again when live.`, true);
    }
    S.pending.clear();
  }

  function onClose(ev) {
    S.ws = null;
    S.live = false;
    S.subTeam = null;
    failPending("connection lost");
    if (S.authError) {
      const why = S.authError;
      signOut(why);
      return;
    }
    const reasons = {
      1000: "closed",
      1006: "connection lost",
      1008: `refused: ${ev.reason || "policy violation"}`,
      1009: "message too large",
      1012: "server restarting",
      4008: "fell behind; resuming",
    };
    scheduleRetry(reasons[ev.code] || `closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`, connect);
  }

  /// Exponential backoff with equal jitter: a delay in [base/2, base).
  function scheduleRetry(why, fn) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(S.attempt, 16));
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    S.attempt++;
    S.why = why;
    S.retryAt = Date.now() + delay;
    S.retryFn = fn;
    clearTimeout(S.retryTimer);
    S.retryTimer = setTimeout(() => { S.retryTimer = 0; fn(); }, delay);
    setConn("reconnecting", retryText());
  }
  const retryText = () =>
    `${S.why} · retry in ${Math.max(0, (S.retryAt - Date.now()) / 1000).toFixed(1)} s`;

  function send(op, meta) {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return 0;
    const id = S.nextId++;
    if (meta) S.pending.set(id, meta);
    ws.send(JSON.stringify({ ...op, id }));
    return id;
  }

  function ping() {
    S.lastPingAt = Date.now();
    send({ op: "ping" }, { kind: "ping", sent: Date.now() });
  }

  // ---- frames ------------------------------------------------------------
  function onFrame(f) {
    switch (f.type) {
      case "welcome": return onWelcome(f);
      case "subscribed": return onSubscribed(f);
      case "unsubscribed": S.pending.delete(f.id); return;
      case "metrics": return onMetrics(f);
      case "log": return onLog(f);
      case "alert": return onAlert(f);
      case "pong": return onPong(f);
      case "silenced": return onSilenced(f);
      case "error": return onError(f);
      case "lagged":
        notice(`Fell behind on ${f.team}/${f.stream}; reconnecting and resuming after seq ${f.last_seq}.`);
        return;
      default: return;
    }
  }

  function onWelcome(f) {
    if (!performance.getEntriesByName("opswire:welcome").length) performance.mark("opswire:welcome");
    S.pending.delete(f.id);
    S.welcome = f;
    S.live = true;
    S.attempt = 0;
    S.teams = Array.isArray(f.teams) ? f.teams : [];
    document.body.classList.remove("signed-out");
    $("signin").hidden = true;
    $("whoami").textContent = f.sub ? `${f.sub}${f.scope ? ` (${f.scope})` : ""}` : "";
    $("sign-out").hidden = !S.info.auth_required;
    if (!S.teams.includes(S.team)) {
      const fromHash = new URLSearchParams(location.hash.slice(1)).get("team");
      S.team = S.teams.includes(fromHash) ? fromHash : S.teams[0] || null;
      showTeam();
    }
    renderTeams();
    setConn("live", "live");
    if (S.team) subscribe(S.team);
    else notice("This token grants no configured team.");
    ping();
  }

  /// Subscribes to every stream of `team`, resuming logs and alerts from the
  /// last (epoch, seq) received. Same epoch: resume from that seq. Another
  /// epoch (the server restarted) or nothing yet: resume from seq 0 of the
  /// current epoch, i.e. everything the server still holds.
  function subscribe(team) {
    const epoch = S.welcome && S.welcome.epoch;
    const d = teamData(team);
    const op = { op: "subscribe", team, streams: STREAMS, filter: { logs: logFilter() }, view: wantedView() };
    const meta = { kind: "subscribe", team, resume: null };
    if (epoch) {
      const resume = {};
      for (const s of RESUMABLE) {
        const p = d.pos[s];
        resume[s] = { epoch, seq: p && p.epoch === epoch ? p.seq : 0 };
      }
      op.resume = resume;
      meta.resume = resume;
      meta.had = { logs: !!d.pos.logs, alerts: !!d.pos.alerts };
      meta.prevEpoch = { logs: d.pos.logs && d.pos.logs.epoch, alerts: d.pos.alerts && d.pos.alerts.epoch };
    }
    if (send(op, meta)) S.subTeam = team;
  }

  function logFilter() {
    const f = {};
    if (S.filter.level) f.min_level = S.filter.level;
    if (S.filter.source) f.source = S.filter.source;
    return f;
  }

  function onSubscribed(f) {
    const m = S.pending.get(f.id);
    S.pending.delete(f.id);
    if (!m || m.kind !== "subscribe" || !m.resume) return;
    const d = teamData(f.team);
    const rec = f.recovered || {};
    const epoch = S.welcome.epoch;
    // Logs: recovered from our point (a new epoch: from its start).
    if (rec.logs === true) {
      if (!d.pos.logs || d.pos.logs.epoch !== epoch) {
        if (m.had.logs) addMarker(f.team, `server restarted: replaying everything since its start (epoch ${epoch})`);
        d.pos.logs = { epoch, seq: m.resume.logs.seq };
      }
    } else if (rec.logs === false && m.had.logs) {
      addMarker(f.team, "logs may be missing here: the server's history no longer reaches back to the last line received");
    }
    // Alerts: keep our state only when resumed in the same epoch; otherwise
    // the replay (everything since the restart, or the firing set) rebuilds it.
    const keep = rec.alerts === true && m.prevEpoch.alerts === epoch;
    if (!keep) {
      d.alerts.clear();
      if (rec.alerts === true) d.pos.alerts = { epoch, seq: m.resume.alerts.seq };
      if (f.team === S.team) renderAlerts();
    }
  }

  function onPong(f) {
    const m = S.pending.get(f.id);
    S.pending.delete(f.id);
    if (!m || typeof f.ts !== "number") return;
    const now = Date.now();
    const mid = (m.sent + now) / 2;
    S.clockOffsetUs = f.ts - mid * 1000;
  }

  function onError(f) {
    const m = f.id != null ? S.pending.get(f.id) : null;
    if (m) S.pending.delete(f.id);
    if (f.code === "unauthenticated") {
      S.authError = f.message || "unauthenticated"; // close 1008 follows
      return;
    }
    if (m && m.kind === "silence") {
      silenceResult(m.team, m.fp, `Could not silence: ${f.message} (${f.code})`, true);
      return;
    }
    if (m && m.kind === "subscribe") {
      if (S.subTeam === m.team && !m.filterOnly) S.subTeam = null;
      notice(`Subscribe to ${m.team}: ${f.message}`);
      return;
    }
    notice(`${f.code}: ${f.message}`);
  }

  // ---- metrics -----------------------------------------------------------
  function onMetrics(f) {
    const d = teamData(f.team);
    const data = f.data || {};
    const view = data.view || "full";
    // A frame of the view we just left (sent before `subscribed`): skip it.
    if (f.team === S.subTeam && view !== S.view) return;
    d.conns = data.connections || null;
    d.newestTs = Math.max(d.newestTs, f.ts || 0);
    const hosts = Array.isArray(data.hosts) ? data.hosts : [];
    if (view === "summary") {
      fleetRows(d, f.ts, summaryRows(data.columns, hosts));
      d.current = [];
      if (f.team === S.team) { renderHosts(); renderCounts(); scheduleFleet(); autoDetail(hosts.length); }
      return;
    }
    // Full snapshots: the tiles of a small team (auto detail) come from them.
    if (!S.detail) fleetRows(d, f.ts, hosts.map((h) => summarize(h, f.ts)));
    d.current = hosts.map((h) => h.host);
    const t = f.ts / 1e6;
    for (const h of hosts) {
      let hs = d.hosts.get(h.host);
      if (!hs) { hs = { pts: [], snap: null }; d.hosts.set(h.host, hs); }
      if (!hs.snap || hs.snap.sampled_at !== h.sampled_at) hs.pts.push(point(t, h));
      hs.snap = h;
    }
    for (const [name, hs] of d.hosts) {
      while (hs.pts.length && hs.pts[0].t < t - WINDOW_S) hs.pts.shift();
      if (!hs.pts.length && !d.current.includes(name)) d.hosts.delete(name);
    }
    if (f.team === S.team) { renderHosts(); renderCounts(); scheduleFleet(); if (!S.detail) autoDetail(hosts.length); }
  }

  function point(t, h) {
    const disks = Array.isArray(h.disks) ? h.disks : [];
    const nets = Array.isArray(h.network) ? h.network : [];
    const load = h.cpu && Array.isArray(h.cpu.load) ? h.cpu.load : [];
    return {
      t,
      cpu: h.cpu ? h.cpu.usage_pct : 0,
      mem: h.memory ? h.memory.usage_pct : 0,
      load1: load[0] ?? null, load5: load[1] ?? null, load15: load[2] ?? null,
      memUsed: h.memory ? h.memory.used_bytes : 0,
      memTotal: h.memory ? h.memory.total_bytes : 0,
      disk: disks.reduce((m, x) => Math.max(m, x.usage_pct || 0), 0),
      rx: nets.reduce((s, x) => s + (x.rx_bytes_per_s || 0), 0),
      tx: nets.reduce((s, x) => s + (x.tx_bytes_per_s || 0), 0),
    };
  }

  function renderCounts() {
    const d = S.team ? S.data.get(S.team) : null;
    const c = d && d.conns;
    $("subscribers-team").textContent = c ? String(c.team) : "–";
    $("subscribers-total").textContent = c ? String(c.total) : "–";
  }

  function renderHosts() {
    const box = $("hosts");
    const d = S.team ? teamData(S.team) : null;
    box.dataset.team = S.team || "";
    const names = d ? [...d.current].filter((n) => !S.detail || S.detail.includes(n)).sort() : [];
    for (const [name, card] of S.cards) {
      if (!names.includes(name)) { dropCard(card); S.cards.delete(name); }
    }
    names.forEach((name, i) => {
      let card = S.cards.get(name);
      if (!card) { card = hostCard(name); S.cards.set(name, card); }
      if (box.children[i] !== card.root) box.insertBefore(card.root, box.children[i] || null);
      updateCard(card, d.hosts.get(name));
    });
    $("hosts-empty").hidden = names.length > 0;
    if (names.length && !performance.getEntriesByName("opswire:first-host").length) performance.mark("opswire:first-host");
    $("hosts-empty").textContent = S.live ? "No hosts reporting for this team." : "Waiting for data…";
  }

  // ---- fleet view ----------------------------------------------------------
  // Every host of the team as a tile fed by the `summary` view (a few dozen
  // bytes per host per tick). Frames only update data and mark tiles dirty;
  // one requestAnimationFrame then redraws the dirty tiles that are shown and
  // reorders the grid only when the order changed. Clicking a tile re-subscribes
  // the same connection with the named-hosts view of that host: its cards
  // (the uPlot charts) replace the tiles until "Fleet" is pressed.
  const staleMs = () => Math.max(STALE_MIN_MS, 5 * S.tickMs);
  const num = (v) => (Number.isFinite(Number(v)) ? Number(v) : 0);

  /// The `summary` row of a full snapshot (a small team in the auto detail).
  function summarize(h, ts) {
    const disks = Array.isArray(h.disks) ? h.disks : [];
    const nets = Array.isArray(h.network) ? h.network : [];
    const load = h.cpu && Array.isArray(h.cpu.load) ? h.cpu.load : [];
    return {
      host: h.host,
      cpu: h.cpu ? num(h.cpu.usage_pct) : 0,
      mem: h.memory ? num(h.memory.usage_pct) : 0,
      disk: disks.length ? disks.reduce((m, x) => Math.max(m, num(x.usage_pct)), 0) : null,
      rx: nets.reduce((a, x) => a + num(x.rx_bytes_per_s), 0),
      tx: nets.reduce((a, x) => a + num(x.tx_bytes_per_s), 0),
      load1: load.length ? num(load[0]) : 0,
      sampled_at: h.sampled_at,
      age_ms: Math.floor((ts - h.sampled_at) / 1000),
    };
  }

  /// A summary frame's rows (arrays in `data.columns` order) as objects.
  function summaryRows(columns, rows) {
    const cols = Array.isArray(columns) ? columns : [];
    return rows.map((r) => (Array.isArray(r) ? Object.fromEntries(cols.map((c, i) => [c, r[i]])) : r));
  }

  function hostState(r) {
    if (num(r.age_ms) > staleMs()) return "stale";
    const worst = Math.max(num(r.cpu), num(r.mem), num(r.disk));
    return worst >= CRIT_PCT ? "crit" : worst >= WARN_PCT ? "warn" : "ok";
  }

  const ageText = (ms) => (ms < 3000 ? "now" : `${duration(ms / 1000)} ago`);

  function fleetRows(d, ts, rows) {
    const seen = new Set();
    for (const r of rows) {
      if (!r || typeof r.host !== "string") continue;
      seen.add(r.host);
      let e = d.fleet.get(r.host);
      if (!e) { e = { sum: null, cpu: [], mem: [], state: "", score: 0, age: "", dirty: true }; d.fleet.set(r.host, e); }
      if (!e.sum || e.sum.sampled_at !== r.sampled_at) {
        e.cpu.push(num(r.cpu));
        e.mem.push(num(r.mem));
        if (e.cpu.length > SPARK_POINTS) { e.cpu.shift(); e.mem.shift(); }
        e.dirty = true;
      }
      e.sum = r;
      const state = hostState(r);
      const age = ageText(num(r.age_ms));
      if (state !== e.state || age !== e.age) e.dirty = true;
      e.state = state;
      e.age = age;
      e.score = Math.max(num(r.cpu), num(r.mem), num(r.disk));
    }
    for (const name of d.fleet.keys()) if (!seen.has(name)) d.fleet.delete(name);
    d.fleetAt = ts;
  }

  /// The view to ask for: the summary, every host (a small team) or the
  /// hosts opened from the fleet (names, their glob characters escaped).
  function wantedView() {
    if (S.detail) return { hosts: S.detail.map(globLiteral) };
    return S.view === "hosts" ? { hosts: ["*"] } : "summary";
  }

  /// A glob (the server's globset) that matches exactly `name`: each of
  /// `* ? [ ] { } \` alone in a class (`[*]`, `[[]`, `[]]`, `[\]`). In a class
  /// a backslash is literal whether or not the server's globs take `\` as an
  /// escape; `!`, `^`, `-` and `,` are literal outside a class and braces (and
  /// `[!]` would open a negated class), so they stay as they are.
  function globLiteral(name) {
    return name.replace(/[*?[\]{}\\]/g, "[$&]");
  }

  /// Switches between the fleet (summary), all hosts' charts (a team of at
  /// most AUTO_DETAIL_MAX hosts: the tiles come from the full snapshots) and
  /// the detail of `detail` hosts; re-subscribes the team's metrics with it.
  function setMode(detail, all) {
    const view = detail || all ? "hosts" : "summary";
    const same = view === S.view && String(detail || "") === String(S.detail || "");
    S.detail = detail;
    S.view = view;
    if (same) return;
    if (view === "summary" && S.team) teamData(S.team).current = [];
    if (S.live && S.subTeam) {
      send({ op: "subscribe", team: S.subTeam, streams: ["metrics"], view: wantedView() },
        { kind: "subscribe", team: S.subTeam, resume: null, filterOnly: true });
    }
    renderFleetChrome();
    renderHosts();
    scheduleFleet();
  }

  function autoDetail(n) {
    if (S.detail) return;
    if (S.view === "summary" && n > 0 && n <= AUTO_DETAIL_MAX) setMode(null, true);
    else if (S.view === "hosts" && n > AUTO_DETAIL_MAX) setMode(null, false);
  }

  function openDetail(names) {
    setMode(names, false);
    const back = $("fleet-back");
    if (!back.hidden) back.focus();
  }

  function renderFleetChrome() {
    const detail = !!S.detail;
    document.body.dataset.mode = detail ? "detail" : S.view === "hosts" ? "all" : "fleet";
    $("fleet-tiles").hidden = detail;
    $("fleet-tools").hidden = detail;
    $("fleet-back").hidden = !detail;
    $("hosts-panel").hidden = !detail && S.view === "summary";
    $("fleet-detail").textContent = detail ? `· ${S.detail.join(", ")}` : "";
  }

  function scheduleFleet() {
    if (!S.fleetRaf) S.fleetRaf = requestAnimationFrame(renderFleet);
  }

  function fleetCompare(a, b) {
    if (S.fleetSort === "worst") {
      const r = RANK[b.e.state] - RANK[a.e.state];
      if (r) return r;
      // Buckets of 5 %: hosts a point apart do not swap places every tick.
      const s = Math.floor(b.e.score / 5) - Math.floor(a.e.score / 5);
      if (s) return s;
    }
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  }

  function renderFleet() {
    S.fleetRaf = 0;
    const grid = $("fleet-tiles");
    const d = S.team ? teamData(S.team) : null;
    const all = d ? [...d.fleet] : [];
    for (const [name, t] of S.tiles) if (!d || !d.fleet.has(name)) { t.root.remove(); S.tiles.delete(name); }
    const q = S.fleetFilter.toLowerCase();
    const shown = [];
    const counts = { crit: 0, warn: 0, stale: 0, ok: 0 };
    for (const [name, e] of all) {
      counts[e.state] = (counts[e.state] || 0) + 1;
      if (!q || name.toLowerCase().includes(q)) shown.push({ name, e });
    }
    shown.sort(fleetCompare);
    const order = shown.map((x) => x.name).join("\n");
    const tiles = shown.map(({ name, e }) => {
      let t = S.tiles.get(name);
      if (!t) { t = fleetTile(name); S.tiles.set(name, t); e.dirty = true; }
      return { t, e };
    });
    if (order !== S.fleetOrder) {
      grid.replaceChildren(...tiles.map((x) => x.t.root));
      S.fleetOrder = order;
    }
    if (!grid.hidden) for (const { t, e } of tiles) if (e.dirty) { updateTile(t, e); e.dirty = false; }
    const n = all.length;
    $("fleet-count").textContent = n
      ? `${n} host${n === 1 ? "" : "s"}${shown.length < n ? `, ${shown.length} shown` : ""} · ${counts.crit} crit · ${counts.warn} warn · ${counts.stale} stale`
      : "";
    const empty = $("fleet-empty");
    empty.hidden = shown.length > 0 || !!S.detail;
    empty.textContent = n ? `No host name contains “${S.fleetFilter}”.` : S.live ? "No hosts reporting for this team." : "Waiting for data…";
    if (shown.length && !performance.getEntriesByName("opswire:first-tile").length) performance.mark("opswire:first-tile");
  }

  function fleetTile(name) {
    const t = {
      age: el("span", { class: "tage" }),
      spark: el("canvas", { class: "spark", width: "200", height: "24", "aria-hidden": "true" }),
      v1: el("span", { class: "tv" }),
      v2: el("span", { class: "tv" }),
    };
    t.root = el("button", { type: "button", class: "tile", testid: "fleet-tile", "data-host": name, title: `${name}: open its charts` },
      el("span", { class: "tname", text: name }), t.age, t.spark, t.v1, t.v2);
    return t;
  }

  function updateTile(t, e) {
    const r = e.sum;
    t.root.dataset.state = e.state;
    t.age.textContent = e.age;
    t.v1.textContent = `CPU ${pct(r.cpu)} · mem ${pct(r.mem)}`;
    t.v2.textContent = `disk ${r.disk == null ? "–" : pct(r.disk)} · ↓${short(r.rx)} ↑${short(r.tx)}`;
    drawSpark(t.spark, e);
  }

  function drawSpark(c, e) {
    const ctx = c.getContext("2d");
    if (!ctx) return;
    const w = c.width, h = c.height;
    ctx.clearRect(0, 0, w, h);
    const step = w / (SPARK_POINTS - 1);
    const line = (vals, stroke) => {
      if (!vals.length) return;
      ctx.beginPath();
      // One sample: a short level line, so a new host shows where it is.
      const pts = vals.length === 1 ? [vals[0], vals[0]] : vals;
      const x0 = w - (pts.length - 1) * step;
      pts.forEach((v, i) => {
        const y = h - 1 - (Math.min(100, Math.max(0, v)) / 100) * (h - 2);
        if (i) ctx.lineTo(x0 + i * step, y); else ctx.moveTo(x0, y);
      });
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    };
    line(e.mem, color("--mem"));
    line(e.cpu, color("--cpu"));
  }

  // ---- charts (uPlot) ----------------------------------------------------
  // Each host card has one uPlot per chart, made once (when it first has a
  // size) and fed with setData on every metrics frame. A chart off screen,
  // in a hidden tab or under the mouse is not redrawn: it catches up when it
  // comes back into view or the mouse leaves, so a read-out holds still.
  const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  const BYTE_INCRS = (() => {
    const out = [];
    for (let k = 0; k < BYTE_UNITS.length; k++) for (const m of [1, 2, 5, 10, 20, 50, 100, 200, 500]) out.push(m * 1024 ** k);
    return out;
  })();
  /// Tick labels of a byte scale, all in the unit of the tick step.
  function byteTicks(splits, incr, suffix) {
    let k = 0;
    while (k < BYTE_UNITS.length - 1 && incr >= 1024 ** (k + 1)) k++;
    return splits.map((v) => `${+(v / 1024 ** k).toFixed(1)} ${BYTE_UNITS[k]}${suffix}`);
  }
  const rate = (v) => `${bytes(v)}/s`;
  const UNITS = {
    pct: { ticks: (s) => s.map((v) => `${+v.toFixed(1)}%`), value: pct, incrs: [1, 2, 5, 10, 20, 25, 50, 100] },
    bytes: { ticks: (s, incr) => byteTicks(s, incr, ""), value: bytes, incrs: BYTE_INCRS },
    rate: { ticks: (s, incr) => byteTicks(s, incr, "/s"), value: rate, incrs: BYTE_INCRS },
    load: { ticks: (s) => s.map((v) => `${+v.toFixed(2)}`), value: (v) => Number(v).toFixed(2), incrs: [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500] },
  };
  /// What each chart shows: its unit, and its series (key in a point).
  const CHARTS = [
    { key: "cpu", label: "CPU", unit: "pct", max: () => 100, series: [{ key: "cpu", label: "CPU", color: "--cpu" }] },
    { key: "load", label: "Load", unit: "load", series: [
      { key: "load1", label: "1 min", color: "--load1" }, { key: "load5", label: "5 min", color: "--load5", fill: false },
      { key: "load15", label: "15 min", color: "--load15", fill: false }] },
    { key: "mem", label: "Memory", unit: "bytes", max: (p) => p && p.memTotal, series: [{ key: "memUsed", label: "used", color: "--mem" }] },
    { key: "disk", label: "Disk", unit: "pct", max: () => 100, series: [{ key: "disk", label: "fullest mount", color: "--disk" }] },
    { key: "net", label: "Network ↓↑", unit: "rate", wide: true, series: [
      { key: "rx", label: "↓ received", color: "--rx" }, { key: "tx", label: "↑ sent", color: "--tx", fill: false }] },
  ];

  const colors = {};
  function color(name) {
    if (!colors[name]) colors[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
    return colors[name];
  }
  const hexA = (c, a) => (/^#[0-9a-f]{6}$/i.test(c) ? c + Math.round(a * 255).toString(16).padStart(2, "0") : c);
  const hms = (s) => { const d = new Date(s * 1000); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; };
  const hm = (s) => { const d = new Date(s * 1000); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; };

  // One observer for every chart: a chart redraws only while on screen.
  const chartVisibility = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      const ch = e.target.__chart;
      if (!ch) continue;
      ch.visible = e.isIntersecting;
      if (ch.visible && ch.dirty) renderChart(ch);
    }
  }) : null;
  const chartSizes = "ResizeObserver" in window ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const ch = e.target.__chart;
      if (ch) sizeChart(ch);
    }
  }) : null;

  function chartFigure(spec) {
    const value = el("b", { testid: `${spec.key}-value`, text: "–" });
    const plot = el("div", { class: "plot" });
    const tip = el("div", { class: "readout", testid: "chart-readout", "aria-hidden": "true", hidden: true }); // mouse-only: the caption holds the value
    const fig = el("figure", { class: `chart chart-${spec.key}${spec.wide ? " wide" : ""}`, testid: "chart", "data-chart": spec.key, "data-unit": spec.unit },
      el("figcaption", null, el("span", { text: spec.label }), value), plot, tip);
    const ch = { spec, fig, value, plot, tip, u: null, data: null, visible: !chartVisibility, dirty: false, hover: false, range: [0, 1], ticks: { x: [], y: [] } };
    fig.__chart = ch;
    plot.__chart = ch;
    if (chartVisibility) chartVisibility.observe(fig);
    if (chartSizes) chartSizes.observe(plot);
    return ch;
  }

  function chartSize(ch) {
    return { width: Math.floor(ch.plot.clientWidth), height: Math.floor(ch.plot.clientHeight) };
  }

  function sizeChart(ch) {
    if (!ch.u) { if (ch.data) renderChart(ch); return; }
    const sz = chartSize(ch);
    if (sz.width > 0 && sz.height > 0 && (sz.width !== ch.u.width || sz.height !== ch.u.height)) ch.u.setSize(sz);
  }

  function makeChart(ch) {
    const sz = chartSize(ch);
    if (!sz.width || !sz.height) return null;
    const unit = UNITS[ch.spec.unit];
    const rootPx = parseFloat(getComputedStyle(document.documentElement).fontSize) || 13;
    const font = `${Math.round(rootPx * 0.72)}px system-ui, sans-serif`;
    const axis = { stroke: color("--muted"), font, ticks: { show: false }, grid: { stroke: color("--grid"), width: 1 } };
    const opts = {
      ...sz,
      legend: { show: false },
      select: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 6 }, y: false },
      padding: [6, 6, 0, 0],
      scales: {
        x: { time: true, range: () => ch.range },
        y: { range: (u, min, max) => {
          const fixed = ch.spec.max && ch.spec.max(ch.last);
          if (fixed) return [0, fixed];
          return [0, max > 0 ? max * 1.15 : (ch.spec.unit === "load" ? 1 : 1024)];
        } },
      },
      axes: [
        { ...axis, space: 48, size: Math.round(rootPx * 1.4), incrs: TIME_INCRS,
          values: (u, splits, ai, space, incr) => (ch.ticks.x = splits.map(incr < 60 ? hms : hm)) },
        { ...axis, space: 18, gap: 4, size: (u, values) => 8 + Math.max(24, ...(values || []).map((v) => v.length * rootPx * 0.42)),
          incrs: unit.incrs, values: (u, splits, ai, space, incr) => (ch.ticks.y = unit.ticks(splits, incr)) },
      ],
      series: [{}, ...ch.spec.series.map((s) => ({
        label: s.label, stroke: color(s.color), width: 1.5, points: { show: false },
        fill: s.fill === false ? undefined : hexA(color(s.color), 0.16),
      }))],
      hooks: {
        setCursor: [(u) => readout(ch, u)],
        draw: [() => {
          if (!performance.getEntriesByName("opswire:first-chart").length) performance.mark("opswire:first-chart");
          ch.fig.dataset.xMin = String(ch.range[0]);
          ch.fig.dataset.xMax = String(ch.range[1]);
          ch.fig.dataset.xTicks = ch.ticks.x.join("|");
          ch.fig.dataset.yTicks = ch.ticks.y.join("|");
        }],
      },
    };
    const u = new uPlot(opts, ch.data, ch.plot);
    // Hold still under the mouse; catch up when it leaves.
    u.over.addEventListener("mouseenter", () => { ch.hover = true; });
    u.over.addEventListener("mouseleave", () => { ch.hover = false; ch.tip.hidden = true; if (ch.dirty) renderChart(ch); });
    return u;
  }

  /// The read-out under the mouse: the time, and every series' value.
  function readout(ch, u) {
    const i = u.cursor.idx;
    if (i == null || u.cursor.left < 0) { ch.tip.hidden = true; return; }
    const unit = UNITS[ch.spec.unit];
    const t = u.data[0][i];
    const rows = [el("div", { class: "rt", testid: "readout-time", text: hms(t) })];
    ch.spec.series.forEach((s, j) => {
      const v = u.data[j + 1][i];
      const sw = el("i", { class: "sw" });
      sw.style.background = color(s.color);
      rows.push(el("div", { class: "rs", testid: "readout-series", "data-series": s.key },
        sw, el("span", { text: s.label }), el("b", { testid: "readout-value", text: v == null ? "no data" : unit.value(v) })));
    });
    ch.tip.replaceChildren(...rows);
    ch.tip.hidden = false;
    // Beside the cursor, flipped to its left in the right half (CSSOM: CSP-safe).
    const left = u.cursor.left + u.over.offsetLeft;
    const flip = left > ch.fig.clientWidth / 2;
    ch.tip.style.transform = `translate(${flip ? `calc(${left - 8}px - 100%)` : `${left + 8}px`}, 0)`;
  }

  /// Points → uPlot columns; a missing stretch (> 3 ticks) becomes a null,
  /// which uPlot draws as a gap.
  function columns(pts, series, gap, tick) {
    const xs = [];
    const ys = series.map(() => []);
    for (let i = 0; i < pts.length; i++) {
      if (i && pts[i].t - pts[i - 1].t > gap) {
        xs.push(pts[i - 1].t + tick);
        for (const y of ys) y.push(null);
      }
      xs.push(pts[i].t);
      series.forEach((s, j) => ys[j].push(pts[i][s.key]));
    }
    return [xs, ...ys];
  }

  function feedChart(ch, pts, range) {
    const gap = (3 * S.tickMs) / 1000;
    ch.data = columns(pts, ch.spec.series, gap, S.tickMs / 1000);
    ch.last = pts[pts.length - 1];
    ch.nextRange = range;
    ch.dirty = true;
    renderChart(ch);
  }

  function renderChart(ch) {
    if (!ch.data || !ch.visible || ch.hover || document.hidden) return;
    ch.range = ch.nextRange;
    if (!ch.u) {
      ch.u = makeChart(ch);
      if (!ch.u) return;
    } else {
      ch.u.setData(ch.data);
    }
    ch.dirty = false;
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    for (const card of S.cards.values()) for (const ch of card.charts) if (ch.dirty) renderChart(ch);
  });

  function hostCard(name) {
    const fact = (key, label) => {
      const dd = el("dd", { testid: key, text: "–" });
      return { node: el("div", null, el("dt", { text: label }), dd), dd };
    };
    const charts = CHARTS.map(chartFigure);
    const c = {
      charts,
      cpu: charts[0], load: fact("load", "load"), mem: charts[2], disk: charts[3], net: charts[4], loadChart: charts[1],
      uptime: fact("uptime", "up"), procs: fact("procs", "procs"),
      badge: el("span", { class: "badge" }),
      age: el("span", { class: "age", testid: "host-age" }),
    };
    c.root = el("article", { class: "host", testid: "host-card", "data-host": name, "aria-label": `host ${name}` },
      el("header", null, el("h3", { text: name }), c.badge, c.age),
      el("dl", { class: "facts" }, c.load.node, c.uptime.node, c.procs.node),
      el("div", { class: "charts" }, ...charts.map((ch) => ch.fig)));
    return c;
  }

  function dropCard(card) {
    for (const ch of card.charts) {
      if (chartVisibility) chartVisibility.unobserve(ch.fig);
      if (chartSizes) chartSizes.unobserve(ch.plot);
      if (ch.u) ch.u.destroy();
    }
    card.root.remove();
  }

  function updateCard(c, hs) {
    if (!hs || !hs.snap) return;
    const h = hs.snap;
    c.snap = h;
    c.badge.textContent = h.source || "";
    const cpu = h.cpu || {};
    const cores = Array.isArray(cpu.cores_pct) ? cpu.cores_pct.length : 0;
    c.cpu.value.textContent = pct(cpu.usage_pct);
    c.cpu.fig.title = `CPU ${pct(cpu.usage_pct)}${cores ? ` over ${cores} cores` : ""}`;
    const load = Array.isArray(cpu.load) ? cpu.load : [];
    c.loadChart.value.textContent = load.length ? Number(load[0]).toFixed(2) : "–";
    c.loadChart.fig.title = `load averages over 1, 5 and 15 minutes${cores ? ` (${cores} cores)` : ""}`;
    const m = h.memory || {};
    c.mem.value.textContent = `${pct(m.usage_pct)} of ${short(m.total_bytes)}`;
    c.mem.fig.title = `memory ${bytes(m.used_bytes)} used of ${bytes(m.total_bytes)}; swap ${bytes(m.swap_used_bytes)} of ${bytes(m.swap_total_bytes)}`;
    const disks = Array.isArray(h.disks) ? h.disks : [];
    const full = disks.reduce((a, x) => (!a || (x.usage_pct || 0) > (a.usage_pct || 0) ? x : a), null);
    c.disk.value.textContent = full ? `${pct(full.usage_pct)} ${full.mount}` : "–";
    c.disk.fig.title = disks.map((x) => `${x.mount}${x.fs_type ? ` (${x.fs_type})` : ""} ${pct(x.usage_pct)} of ${bytes(x.total_bytes)}`).join("\n") || "no disks";
    const last = hs.pts[hs.pts.length - 1] || { rx: 0, tx: 0 };
    c.net.value.textContent = `↓${short(last.rx)} ↑${short(last.tx)}`;
    c.net.fig.title = `network: received ${bytes(last.rx)}/s, sent ${bytes(last.tx)}/s (all interfaces)`;
    c.load.dd.textContent = load.length ? load.map((x) => Number(x).toFixed(2)).join(" ") : "–";
    c.uptime.dd.textContent = duration(h.uptime_s || 0);
    c.procs.dd.textContent = String(h.processes ?? "–");
    const end = hs.pts.length ? hs.pts[hs.pts.length - 1].t : 0;
    const tEnd = Math.max(end, teamData(S.team).newestTs / 1e6);
    for (const ch of c.charts) feedChart(ch, hs.pts, [tEnd - WINDOW_S, tEnd]);
    updateAge(c);
  }

  function updateAge(c) {
    if (!c.snap) return;
    const age = (nowUs() - c.snap.sampled_at) / 1e6;
    c.age.textContent = `sampled ${age < 0.05 ? "0.0" : age.toFixed(1)} s ago`;
    c.age.classList.toggle("stale", age * 1000 > 3 * S.tickMs);
  }

  // ---- logs --------------------------------------------------------------
  function onLog(f) {
    const d = teamData(f.team);
    const p = d.pos.logs;
    if (p && p.epoch === f.epoch && f.seq <= p.seq) return; // already have it
    d.pos.logs = { epoch: f.epoch, seq: f.seq };
    d.newestTs = Math.max(d.newestTs, f.ts || 0);
    const data = f.data || {};
    const entry = {
      key: `${f.epoch}:${f.seq}`,
      ts: data.time || f.ts,
      level: String(data.level || "INFO").toUpperCase(),
      source: data.source || "",
      host: data.host || "",
      message: data.message == null ? "" : String(data.message),
      fields: data.fields,
      trace: data.trace_id || f.trace_id || "",
    };
    pushLog(f.team, d, entry);
    if (entry.source && !d.sources.has(entry.source) && d.sources.size < 200) {
      d.sources.add(entry.source);
      if (f.team === S.team) renderSources();
    }
  }

  function addMarker(team, text) {
    pushLog(team, teamData(team), { key: `m${S.nextId++}`, marker: true, ts: nowUs(), level: "", message: text });
  }

  function pushLog(team, d, entry) {
    d.logs.push(entry);
    if (d.logs.length > MAX_LOGS) d.logs.splice(0, d.logs.length - MAX_LOGS);
    if (team !== S.team) return;
    if (S.paused) { S.unseen++; renderPause(); return; }
    if (!matches(entry)) return;
    const list = $("logs");
    list.prepend(logRow(entry));
    while (list.children.length > MAX_LOG_ROWS) list.lastElementChild.remove();
    $("logs-empty").hidden = true;
  }

  function matches(e) {
    if (e.marker) return true;
    if (S.filter.level && LEVELS.indexOf(e.level) < LEVELS.indexOf(S.filter.level.toUpperCase())) return false;
    if (S.filter.source) {
      const wanted = S.filter.source.split(",").map((s) => s.trim()).filter(Boolean);
      if (wanted.length && !wanted.includes(e.source)) return false;
    }
    return true;
  }

  function traceUrl(id) {
    const base = S.info && S.info.jaeger_url;
    if (!base || !/^[0-9a-fA-F]{16,32}$/.test(id)) return null;
    try {
      const u = new URL(base);
      if (u.protocol !== "http:" && u.protocol !== "https:") return null;
    } catch { return null; }
    return `${base.replace(/\/+$/, "")}/trace/${id}`;
  }

  /// A LogQL string literal (double-quoted, Go escapes).
  const logqlString = (v) => `"${String(v).replace(/[\\"]/g, "\\$&").replace(/\n/g, "\\n")}"`;

  /// Grafana Explore on the team's lines in Loki, from the earlier of an hour
  /// ago and 15 minutes before the oldest line on screen, to now. Null
  /// without `web.grafana_url`.
  function grafanaUrl() {
    const base = S.info && S.info.grafana_url;
    const service = S.info && S.info.team_logs_service;
    if (!base || !service || !S.team) return null;
    try {
      const u = new URL(base);
      if (u.protocol !== "http:" && u.protocol !== "https:") return null;
    } catch { return null; }
    const uid = S.info.grafana_loki_uid || "loki";
    const rows = $("logs").querySelectorAll('[data-testid="log-line"]');
    const oldestMs = rows.length ? Number(rows[rows.length - 1].dataset.ts) / 1000 : NaN;
    const nowMs = nowUs() / 1000;
    const from = Math.floor(Math.min(nowMs - 3600e3, Number.isFinite(oldestMs) ? oldestMs - 900e3 : Infinity));
    const expr = `{service_name=${logqlString(service)}, opswire_team=${logqlString(S.team)}}`;
    const panes = { a: {
      datasource: uid,
      queries: [{ refId: "A", datasource: { type: "loki", uid }, expr }],
      range: { from: String(from), to: "now" },
    } };
    return `${base.replace(/\/+$/, "")}/explore?schemaVersion=1&orgId=1&panes=${encodeURIComponent(JSON.stringify(panes))}`;
  }

  function renderGrafanaLink() {
    const url = grafanaUrl();
    $("grafana-older").hidden = !url;
    const a = $("grafana-link");
    if (url) a.href = url;
    else a.removeAttribute("href");
  }

  function logRow(e) {
    if (e.marker) {
      return el("li", { class: "log marker", testid: "log-marker" }, el("time", { text: clock(e.ts / 1000) }), el("span", { class: "msg", text: `⋯ ${e.message}` }));
    }
    const fields = e.fields && typeof e.fields === "object" ? Object.entries(e.fields) : [];
    const extra = fields.length ? ` ${fields.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")}` : "";
    const url = e.trace ? traceUrl(e.trace) : null;
    return el("li", { class: `log lvl-${e.level}`, testid: "log-line", "data-level": e.level, "data-source": e.source, "data-key": e.key, "data-ts": e.ts },
      el("time", { text: clock(e.ts / 1000), title: new Date(e.ts / 1000).toISOString() }),
      el("span", { class: "lvl", text: e.level }),
      el("span", { class: "src", text: e.source, title: e.host ? `${e.source} on ${e.host}` : e.source }),
      el("span", { class: "msg" },
        e.host ? el("span", { class: "lhost", text: `${e.host} ` }) : null,
        el("span", { testid: "log-message", text: e.message + extra })),
      url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", testid: "trace-link", title: `trace ${e.trace} in Jaeger` }, "trace") : el("span"));
  }

  function renderLogs() {
    const list = $("logs");
    const d = S.team ? teamData(S.team) : null;
    const rows = [];
    if (d) {
      for (let i = d.logs.length - 1; i >= 0 && rows.length < MAX_LOG_ROWS; i--) {
        if (matches(d.logs[i])) rows.push(logRow(d.logs[i]));
      }
    }
    list.replaceChildren(...rows);
    $("logs-empty").hidden = rows.length > 0;
    renderGrafanaLink();
  }

  function renderSources() {
    const d = S.team ? teamData(S.team) : null;
    const dl = document.getElementById("log-sources");
    dl.replaceChildren(...(d ? [...d.sources].sort().map((s) => el("option", { value: s })) : []));
  }

  function renderPause() {
    const b = $("logs-pause");
    b.setAttribute("aria-pressed", String(S.paused));
    b.textContent = S.paused ? `Resume${S.unseen ? ` (${S.unseen} new)` : ""}` : "Pause";
  }

  /// Sends the filter to the server: re-subscribing to the logs stream
  /// replaces its filter without a replay.
  function applyFilter() {
    const level = $("log-level").value;
    const source = $("log-source").value.split(",").map((s) => s.trim()).filter(Boolean).join(",");
    if (level === S.filter.level && source === S.filter.source) return;
    S.filter = { level, source };
    if (S.live && S.subTeam) {
      send({ op: "subscribe", team: S.subTeam, streams: ["logs"], filter: { logs: logFilter() } },
        { kind: "subscribe", team: S.subTeam, resume: null, filterOnly: true });
    }
    renderLogs();
  }

  // ---- alerts ------------------------------------------------------------
  function onAlert(f) {
    const d = teamData(f.team);
    const a = f.data || {};
    const cur = d.alerts.get(a.fingerprint);
    if (cur && cur.epoch === f.epoch && f.seq <= cur.seq) return;
    const p = d.pos.alerts;
    if (!p || p.epoch !== f.epoch || f.seq > p.seq) d.pos.alerts = { epoch: f.epoch, seq: f.seq };
    d.newestTs = Math.max(d.newestTs, f.ts || 0);
    d.alerts.set(a.fingerprint, { ...a, epoch: f.epoch, seq: f.seq, ts: f.ts });
    if (f.team === S.team) renderAlerts();
  }

  function alertOrder(a, b) {
    const fa = a.status === "firing" ? 0 : 1, fb = b.status === "firing" ? 0 : 1;
    if (fa !== fb) return fa - fb;
    const sa = SEVERITY[a.severity] ?? 4, sb = SEVERITY[b.severity] ?? 4;
    if (sa !== sb) return sa - sb;
    if (a.status !== "firing" && a.ts !== b.ts) return b.ts - a.ts; // newest resolution first
    return String(b.starts_at).localeCompare(String(a.starts_at)) || String(a.alertname).localeCompare(String(b.alertname));
  }

  function renderAlerts() {
    const list = $("alerts");
    const d = S.team ? teamData(S.team) : null;
    const now = nowUs();
    const shown = [];
    if (d) {
      for (const [fp, a] of d.alerts) {
        if (a.status !== "firing" && (now - a.ts) / 1000 > RESOLVED_TTL_MS) d.alerts.delete(fp);
        else shown.push(a);
      }
    }
    shown.sort(alertOrder);
    const keep = new Set(shown.map((a) => a.fingerprint));
    for (const [fp, li] of S.alertEls) if (!keep.has(fp)) { li.root.remove(); S.alertEls.delete(fp); }
    shown.forEach((a, i) => {
      let item = S.alertEls.get(a.fingerprint);
      if (!item) { item = alertItem(S.team, a.fingerprint); S.alertEls.set(a.fingerprint, item); }
      updateAlert(item, a);
      if (list.children[i] !== item.root) list.insertBefore(item.root, list.children[i] || null);
    });
    const firing = shown.filter((a) => a.status === "firing").length;
    $("alerts-count").textContent = shown.length ? `${firing} firing${shown.length > firing ? `, ${shown.length - firing} resolved` : ""}` : "";
    $("alerts-empty").hidden = shown.length > 0;
  }

  function alertItem(team, fp) {
    const it = {
      sev: el("span", { class: "sev" }),
      name: el("strong", { class: "name", testid: "alert-name" }),
      state: el("span", { class: "state", testid: "alert-status" }),
      since: el("span", { class: "since" }),
      summary: el("p", { class: "summary" }),
      labels: el("p", { class: "labels" }),
      result: el("p", { class: "silence-result", testid: "silence-result", role: "status" }),
    };
    it.open = el("button", { type: "button", class: "small", testid: "silence-open", "aria-expanded": "false" }, "Silence…");
    it.duration = el("select", { testid: "silence-duration" },
      el("option", { value: "900" }, "15 minutes"), el("option", { value: "3600", selected: true }, "1 hour"),
      el("option", { value: "14400" }, "4 hours"), el("option", { value: "86400" }, "1 day"), el("option", { value: "604800" }, "7 days"));
    it.comment = el("input", { type: "text", testid: "silence-comment", maxlength: "500", placeholder: "why (optional)" });
    it.form = el("form", { class: "silence-form", testid: "silence-form", hidden: true },
      el("label", null, "Duration", it.duration),
      el("label", null, "Comment", it.comment),
      el("button", { type: "submit", class: "small", testid: "silence-submit" }, "Create silence"),
      el("button", { type: "button", class: "small", testid: "silence-cancel" }, "Cancel"));
    const close = () => { it.form.hidden = true; it.open.setAttribute("aria-expanded", "false"); it.open.focus(); };
    it.open.addEventListener("click", () => {
      it.form.hidden = !it.form.hidden;
      it.open.setAttribute("aria-expanded", String(!it.form.hidden));
      if (!it.form.hidden) it.duration.focus();
    });
    $("silence-cancel", it.form).addEventListener("click", close);
    it.form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") close(); });
    it.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const duration_s = Number(it.duration.value);
      const comment = it.comment.value.trim();
      const label = it.duration.selectedOptions[0] ? it.duration.selectedOptions[0].textContent : duration(duration_s);
      const id = send({ op: "silence", team, fingerprint: fp, duration_s, comment }, { kind: "silence", team, fp, label });
      if (!id) { silenceResult(team, fp, "Not connected: try again when live.", true); return; }
      silenceResult(team, fp, "Creating silence…", false);
      it.form.hidden = true;
      it.open.setAttribute("aria-expanded", "false");
    });
    it.root = el("li", { class: "alert", testid: "alert", "data-fingerprint": fp },
      el("div", { class: "alert-head" }, it.sev, it.name, it.state, it.since, it.open),
      it.summary, it.labels, it.form, it.result);
    const prev = S.silenceUi.get(`${team}/${fp}`);
    if (prev) showResult(it, prev);
    return it;
  }

  function updateAlert(it, a) {
    const sev = String(a.severity || "none").toLowerCase();
    const status = a.status === "firing" ? "firing" : "resolved";
    it.root.className = `alert sev-${sev} ${status}`;
    Object.assign(it.root.dataset, { status, severity: sev, alertname: a.alertname || "" });
    it.sev.textContent = sev;
    it.name.textContent = a.alertname || a.fingerprint;
    it.state.textContent = status;
    const since = Date.parse(a.starts_at);
    const ago = (ms) => duration((nowUs() / 1000 - ms) / 1000);
    if (status === "firing") it.since.textContent = Number.isFinite(since) ? `for ${ago(since)}` : "";
    else it.since.textContent = `resolved ${ago(a.ts / 1000)} ago`;
    it.since.title = Number.isFinite(since) ? `started ${new Date(since).toLocaleString()}` : "";
    const ann = a.annotations || {};
    it.summary.textContent = ann.summary || ann.description || "";
    it.summary.hidden = !it.summary.textContent;
    const labels = Object.entries(a.labels || {}).filter(([k]) => !["alertname", "severity", "team"].includes(k));
    it.labels.textContent = labels.map(([k, v]) => `${k}=${v}`).join(" ");
    it.labels.hidden = !labels.length;
    it.open.hidden = status !== "firing";
    if (status !== "firing") it.form.hidden = true;
    if (status !== "firing") {
      // Fade from when the resolution arrived, across re-renders.
      it.root.style.animationDelay = `${-Math.max(0, (nowUs() - a.ts) / 1e6)}s`;
    }
  }

  function silenceResult(team, fp, text, isError, silenceId) {
    const r = { text, isError, silenceId };
    S.silenceUi.set(`${team}/${fp}`, r);
    if (team === S.team && S.alertEls.has(fp)) showResult(S.alertEls.get(fp), r);
  }

  function showResult(it, r) {
    it.result.textContent = r.text;
    it.result.className = `silence-result ${r.isError ? "error" : r.silenceId ? "ok" : ""}`;
    if (r.silenceId) it.result.dataset.silenceId = r.silenceId;
    else delete it.result.dataset.silenceId;
  }

  function onSilenced(f) {
    const m = S.pending.get(f.id);
    S.pending.delete(f.id);
    if (!m) return;
    silenceResult(m.team, m.fp, `Silenced for ${m.label} in Alertmanager (silence ${f.silence_id}).`, false, f.silence_id);
  }

  // ---- teams, sign-in ----------------------------------------------------
  function renderTeams() {
    const nav = $("team-switcher");
    nav.replaceChildren(...S.teams.map((t) => el("button", {
      type: "button", testid: `team-${t}`, "data-team": t, "aria-pressed": String(t === S.team),
      onclick: () => selectTeam(t),
    }, t)));
  }

  function selectTeam(team) {
    if (team === S.team) return;
    const old = S.subTeam;
    S.team = team;
    try { history.replaceState(null, "", `#team=${encodeURIComponent(team)}`); } catch { /* ignore */ }
    S.paused = false;
    S.unseen = 0;
    S.detail = null;
    S.view = "summary";
    renderPause();
    renderFleetChrome();
    showTeam();
    renderTeams();
    if (S.live) {
      if (old && old !== team) send({ op: "unsubscribe", team: old }, { kind: "unsubscribe", team: old });
      subscribe(team);
    }
  }

  /// Clears the per-team views and draws `S.team` from memory.
  function showTeam() {
    for (const card of S.cards.values()) dropCard(card);
    $("hosts").replaceChildren();
    S.cards.clear();
    $("alerts").replaceChildren();
    S.alertEls.clear();
    $("fleet-tiles").replaceChildren();
    S.tiles.clear();
    S.fleetOrder = "";
    for (const e of S.team ? teamData(S.team).fleet.values() : []) e.dirty = true;
    scheduleFleet();
    $("hosts-team").textContent = S.team ? `· ${S.team}` : "";
    document.body.dataset.team = S.team || "";
    renderHosts();
    renderCounts();
    renderAlerts();
    renderLogs();
    renderSources();
  }

  function showSignin(error) {
    document.body.classList.add("signed-out");
    $("signin").hidden = false;
    $("signin-error").textContent = error || "";
    setConn("signed-out", error ? "signed out" : "sign in to connect");
    $("token-input").focus();
  }

  function signOut(why) {
    S.token = null;
    store.del(TOKEN_KEY);
    dropSocket(1000, "signed out");
    clearTimeout(S.retryTimer);
    S.data.clear();
    S.silenceUi.clear();
    S.teams = [];
    S.team = null;
    S.welcome = null;
    S.detail = null;
    S.view = "summary";
    renderFleetChrome();
    renderTeams();
    showTeam();
    $("whoami").textContent = "";
    $("sign-out").hidden = true;
    showSignin(why ? `The server refused the token: ${why}` : "");
  }

  // ---- periodic ----------------------------------------------------------
  function tick() {
    const c = $("conn-state");
    if (c.dataset.state === "reconnecting") c.textContent = retryText();
    const d = S.team ? S.data.get(S.team) : null;
    const f = $("freshness");
    if (!d || !d.newestTs) {
      f.textContent = "no data";
      f.dataset.stale = "true";
    } else {
      const age = Math.max(0, (nowUs() - d.newestTs) / 1e6);
      f.textContent = `data ${age.toFixed(1)} s old`;
      f.dataset.stale = String(age * 1000 > 3 * S.tickMs);
    }
    for (const card of S.cards.values()) updateAge(card);
    if (S.live) {
      // A socket that delivers nothing (metrics come every tick) is dead.
      if (S.subTeam && Date.now() - S.lastMsgAt > Math.max(10000, 5 * S.tickMs)) {
        dropSocket(4000, "no data");
        scheduleRetry("no data received", connect);
      } else if (Date.now() - S.lastPingAt > PING_EVERY_MS) {
        ping();
      }
    }
  }

  function start() {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      $("token-input").value = "";
      S.token = token;
      store.set(TOKEN_KEY, token);
      $("signin").hidden = true;
      document.body.classList.remove("signed-out");
      S.attempt = 0;
      connect();
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("retry-now").addEventListener("click", () => {
      if (S.retryFn) { const fn = S.retryFn; clearTimeout(S.retryTimer); S.retryTimer = 0; fn(); }
    });
    // The range ends "now": refresh it right before the link is followed.
    for (const ev of ["focus", "mouseenter", "click", "auxclick"]) $("grafana-link").addEventListener(ev, renderGrafanaLink);
    $("log-controls").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilter(); });
    $("log-level").addEventListener("change", applyFilter);
    $("log-source").addEventListener("change", applyFilter);
    $("logs-pause").addEventListener("click", () => {
      S.paused = !S.paused;
      if (!S.paused) { S.unseen = 0; renderLogs(); }
      renderPause();
    });
    $("fleet-filter").addEventListener("input", (ev) => { S.fleetFilter = ev.target.value.trim(); scheduleFleet(); });
    $("fleet-sort").addEventListener("change", (ev) => { S.fleetSort = ev.target.value; scheduleFleet(); });
    $("fleet-tiles").addEventListener("click", (ev) => {
      const tile = ev.target.closest("[data-testid=\"fleet-tile\"]");
      if (tile) openDetail([tile.dataset.host]);
    });
    $("fleet-back").addEventListener("click", () => { setMode(null, false); $("fleet-filter").focus(); });
    renderFleetChrome();
    setInterval(tick, 250);
    setInterval(() => { if (S.team) renderAlerts(); }, 5000);
    loadInfo();
  }

  start();
})();
