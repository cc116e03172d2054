// opswire dashboard: the reference browser client of protocol v1.
// Plain JS, no dependencies. See docs/dashboard.md for how it works.
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
    alertEls: new Map(), // fingerprint -> <li> of the team on screen
    silenceUi: new Map(), // team/fingerprint -> {result, error, open}
  };

  function teamData(team) {
    let d = S.data.get(team);
    if (!d) {
      d = {
        hosts: new Map(), // host -> {pts: [{t,cpu,mem,disk,rx,tx}], snap}
        current: [], // host names in the newest metrics frame
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
    const op = { op: "subscribe", team, streams: STREAMS, filter: { logs: logFilter() } };
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
    d.conns = data.connections || null;
    d.newestTs = Math.max(d.newestTs, f.ts || 0);
    const hosts = Array.isArray(data.hosts) ? data.hosts : [];
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
    if (f.team === S.team) { renderHosts(); renderCounts(); }
  }

  function point(t, h) {
    const disks = Array.isArray(h.disks) ? h.disks : [];
    const nets = Array.isArray(h.network) ? h.network : [];
    return {
      t,
      cpu: h.cpu ? h.cpu.usage_pct : 0,
      mem: h.memory ? h.memory.usage_pct : 0,
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
    const names = d ? [...d.current].sort() : [];
    for (const [name, card] of S.cards) {
      if (!names.includes(name)) { card.root.remove(); S.cards.delete(name); }
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

  function hostCard(name) {
    const chart = (key, label) => {
      const value = el("b", { testid: `${key}-value`, text: "–" });
      const canvas = el("canvas", { "aria-hidden": "true" });
      const fig = el("figure", { class: `chart chart-${key}` }, el("figcaption", null, el("span", { text: label }), value), canvas);
      return { fig, value, canvas };
    };
    const fact = (key, label) => {
      const dd = el("dd", { testid: key, text: "–" });
      return { node: el("div", null, el("dt", { text: label }), dd), dd };
    };
    const c = {
      cpu: chart("cpu", "CPU"), mem: chart("mem", "Memory"), disk: chart("disk", "Disk"), net: chart("net", "Network ↓↑"),
      load: fact("load", "load"), uptime: fact("uptime", "up"), procs: fact("procs", "procs"),
      badge: el("span", { class: "badge" }),
      age: el("span", { class: "age", testid: "host-age" }),
    };
    c.root = el("article", { class: "host", testid: "host-card", "data-host": name, "aria-label": `host ${name}` },
      el("header", null, el("h3", { text: name }), c.badge, c.age),
      el("dl", { class: "facts" }, c.load.node, c.uptime.node, c.procs.node),
      el("div", { class: "charts" }, c.cpu.fig, c.mem.fig, c.disk.fig, c.net.fig));
    return c;
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
    const m = h.memory || {};
    c.mem.value.textContent = `${pct(m.usage_pct)} of ${short(m.total_bytes)}`;
    c.mem.fig.title = `memory ${bytes(m.used_bytes)} used of ${bytes(m.total_bytes)}; swap ${bytes(m.swap_used_bytes)} of ${bytes(m.swap_total_bytes)}`;
    const disks = Array.isArray(h.disks) ? h.disks : [];
    const full = disks.reduce((a, x) => (!a || (x.usage_pct || 0) > (a.usage_pct || 0) ? x : a), null);
    c.disk.value.textContent = full ? `${pct(full.usage_pct)} ${full.mount}` : "–";
    c.disk.fig.title = disks.map((x) => `${x.mount} ${pct(x.usage_pct)} of ${bytes(x.total_bytes)}`).join("\n") || "no disks";
    const last = hs.pts[hs.pts.length - 1] || { rx: 0, tx: 0 };
    c.net.value.textContent = `↓${short(last.rx)} ↑${short(last.tx)}`;
    c.net.fig.title = `network: received ${bytes(last.rx)}/s, sent ${bytes(last.tx)}/s (all interfaces)`;
    c.load.dd.textContent = Array.isArray(cpu.load) ? cpu.load.map((x) => Number(x).toFixed(2)).join(" ") : "–";
    c.uptime.dd.textContent = duration(h.uptime_s || 0);
    c.procs.dd.textContent = String(h.processes ?? "–");
    const end = hs.pts.length ? hs.pts[hs.pts.length - 1].t : 0;
    const tEnd = Math.max(end, teamData(S.team).newestTs / 1e6);
    const gap = (3 * S.tickMs) / 1000;
    draw(c.cpu.canvas, [{ key: "cpu", color: "--cpu" }], hs.pts, { max: 100, tEnd, gap });
    draw(c.mem.canvas, [{ key: "mem", color: "--mem" }], hs.pts, { max: 100, tEnd, gap });
    draw(c.disk.canvas, [{ key: "disk", color: "--disk" }], hs.pts, { max: 100, tEnd, gap });
    draw(c.net.canvas, [{ key: "rx", color: "--rx" }, { key: "tx", color: "--tx", fill: false }], hs.pts, { max: 0, tEnd, gap });
    updateAge(c);
  }

  function updateAge(c) {
    if (!c.snap) return;
    const age = (nowUs() - c.snap.sampled_at) / 1e6;
    c.age.textContent = `sampled ${age < 0.05 ? "0.0" : age.toFixed(1)} s ago`;
    c.age.classList.toggle("stale", age * 1000 > 3 * S.tickMs);
  }

  const colors = {};
  function color(name) {
    if (!colors[name]) colors[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
    return colors[name];
  }

  /// A sparkline of the last WINDOW_S seconds; lines break across gaps.
  function draw(canvas, series, pts, { max, tEnd, gap }) {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    const W = Math.round(w * dpr), H = Math.round(h * dpr);
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let top = max;
    if (!top) {
      for (const p of pts) for (const s of series) top = Math.max(top, p[s.key]);
      top = top > 0 ? top * 1.15 : 1;
    }
    ctx.strokeStyle = "rgba(255,255,255,0.07)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, Math.round(h / 2) + 0.5);
    ctx.lineTo(w, Math.round(h / 2) + 0.5);
    ctx.stroke();
    const x = (t) => w - ((tEnd - t) / WINDOW_S) * w;
    const y = (v) => h - 2 - (Math.min(v, top) / top) * (h - 4);
    for (const s of series) {
      const c = color(s.color);
      const runs = [];
      let run = [];
      for (let i = 0; i < pts.length; i++) {
        if (i && pts[i].t - pts[i - 1].t > gap) { runs.push(run); run = []; }
        run.push(pts[i]);
      }
      runs.push(run);
      for (const r of runs) {
        if (!r.length) continue;
        ctx.beginPath();
        r.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[s.key])) : ctx.moveTo(x(p.t), y(p[s.key]))));
        if (r.length === 1) ctx.lineTo(x(r[0].t) + 1.5, y(r[0][s.key]));
        ctx.strokeStyle = c;
        ctx.lineWidth = 1.5;
        ctx.stroke();
        if (s.fill !== false && r.length > 1) {
          ctx.lineTo(x(r[r.length - 1].t), h);
          ctx.lineTo(x(r[0].t), h);
          ctx.closePath();
          ctx.globalAlpha = 0.18;
          ctx.fillStyle = c;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
      }
    }
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

  function logRow(e) {
    if (e.marker) {
      return el("li", { class: "log marker", testid: "log-marker" }, el("time", { text: clock(e.ts / 1000) }), el("span", { class: "msg", text: `⋯ ${e.message}` }));
    }
    const fields = e.fields && typeof e.fields === "object" ? Object.entries(e.fields) : [];
    const extra = fields.length ? ` ${fields.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")}` : "";
    const url = e.trace ? traceUrl(e.trace) : null;
    return el("li", { class: `log lvl-${e.level}`, testid: "log-line", "data-level": e.level, "data-source": e.source, "data-key": e.key },
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
    renderPause();
    showTeam();
    renderTeams();
    if (S.live) {
      if (old && old !== team) send({ op: "unsubscribe", team: old }, { kind: "unsubscribe", team: old });
      subscribe(team);
    }
  }

  /// Clears the per-team views and draws `S.team` from memory.
  function showTeam() {
    $("hosts").replaceChildren();
    S.cards.clear();
    $("alerts").replaceChildren();
    S.alertEls.clear();
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
    $("log-controls").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilter(); });
    $("log-level").addEventListener("change", applyFilter);
    $("log-source").addEventListener("change", applyFilter);
    $("logs-pause").addEventListener("click", () => {
      S.paused = !S.paused;
      if (!S.paused) { S.unseen = 0; renderLogs(); }
      renderPause();
    });
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { for (const [name, c] of S.cards) updateCard(c, teamData(S.team).hosts.get(name)); }, 100);
    });
    setInterval(tick, 250);
    setInterval(() => { if (S.team) renderAlerts(); }, 5000);
    loadInfo();
  }

  start();
})();
