// The streamtally dashboard: one EventSource per view, a snapshot and then
// deltas applied in version order, exactly (BigInt decimals, never floats).
"use strict";
(() => {
  const MAX_BARS = 12;
  const SPARK_MS = 10 * 60 * 1000;
  const BUCKETS = 24; // a bucketed view shows the last 24 buckets up to now
  const $ = (sel, el = document) => el.querySelector(sel);

  // ---- exact decimals: coefficient (BigInt) and scale ----
  function dec(s) {
    let neg = false;
    if (s[0] === "-" || s[0] === "+") { neg = s[0] === "-"; s = s.slice(1); }
    const [i, f = ""] = s.split(".");
    const c = BigInt((i || "0") + f);
    return { c: neg ? -c : c, s: f.length };
  }
  function add(a, b) {
    const s = Math.max(a.s, b.s);
    return { c: a.c * 10n ** BigInt(s - a.s) + b.c * 10n ** BigInt(s - b.s), s };
  }
  function str(d) {
    let c = d.c, neg = c < 0n;
    if (neg) c = -c;
    let t = c.toString();
    if (d.s > 0) {
      t = t.padStart(d.s + 1, "0");
      const i = t.slice(0, t.length - d.s), f = t.slice(t.length - d.s).replace(/0+$/, "");
      t = f ? i + "." + f : i;
    }
    return (neg && t !== "0" ? "-" : "") + t;
  }
  const addStr = (a, b) => str(add(dec(a), dec(b)));
  function pretty(s) {
    let neg = s.startsWith("-");
    if (neg) s = s.slice(1);
    const [i, f] = s.split(".");
    return (neg ? "\u2212" : "") + i.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (f ? "." + f : "");
  }
  // A group key joins the group_by values with "|", escaping "|" and "\".
  function label(key) {
    const parts = [""];
    for (let i = 0; i < key.length; i++) {
      if (key[i] === "\\" && i + 1 < key.length) parts[parts.length - 1] += key[++i];
      else if (key[i] === "|") parts.push("");
      else parts[parts.length - 1] += key[i];
    }
    return parts.join(" \u00b7 ");
  }
  function ago(ms) {
    if (!ms) return "never";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return s.toFixed(1) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- token: #token=… once, then kept in localStorage ----
  let token = localStorage.getItem("streamtally.token") || "";
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    token = hash.get("token");
    localStorage.setItem("streamtally.token", token);
    history.replaceState(null, "", location.pathname + location.search);
  }

  const views = [];

  function setConn() {
    const states = views.map((v) => v.state);
    let s = "connecting";
    if (states.length && states.every((x) => x === "live")) s = "live";
    else if (states.includes("denied")) s = "denied";
    else if (states.includes("offline")) s = "offline";
    const c = $("#conn");
    c.dataset.state = s;
    $("#conn-text").textContent = s;
  }

  function showLogin(why) {
    $("#login").hidden = false;
    $("#login-why").textContent = why;
    $("#conn").dataset.state = "denied";
    $("#conn-text").textContent = "no access";
  }
  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    localStorage.setItem("streamtally.token", token);
    location.reload();
  });

  async function start() {
    let res;
    try {
      res = await fetch("v1/views", { headers: token ? { Authorization: "Bearer " + token } : {} });
    } catch (e) {
      $("#conn").dataset.state = "offline";
      $("#conn-text").textContent = "offline";
      setTimeout(start, 3000);
      return;
    }
    if (res.status === 401) return showLogin(token ? "The token was refused (wrong or expired)." : "This gateway needs a token.");
    if (!res.ok) { setTimeout(start, 3000); return; }
    const { views: infos } = await res.json();
    if (!infos.length) return showLogin("This token may read no view.");
    for (const info of infos) views.push(newView(info));
    connect();
    setInterval(() => views.forEach(tickAge), 250);
  }

  function newView(info) {
    const v = { info, state: "connecting", version: 0, updatedMs: 0, lost: "", measures: {}, series: {}, rows: {}, els: {},
      buckets: {}, from: "", current: "" };
    const sec = el("section", "view");
    sec.dataset.view = info.name;
    const head = el("div", "view-head");
    head.append(el("h2", "", info.name + "  \u00b7  by " + info.group_by.join(", ") + (info.bucket ? "  \u00b7  per " + info.bucket.size : "")));
    const meta = el("div", "view-meta");
    v.els.conn = el("div", "conn");
    v.els.conn.dataset.state = "connecting";
    v.els.conn.append(el("span", "dot"), (v.els.connText = el("span", "", "connecting")));
    v.els.version = el("span", "version", "version \u2013");
    v.els.version.dataset.version = info.name;
    v.els.age = el("span", "age", "last change never");
    meta.append(v.els.conn, v.els.version, v.els.age);
    head.append(meta);
    sec.append(head);
    v.els.lost = el("div", "lost");
    v.els.lost.hidden = true;
    sec.append(v.els.lost);
    const grid = el("div", "measures");
    for (const m of info.measures) {
      const box = el("div", "measure");
      const mh = el("div", "measure-head");
      mh.append(el("span", "measure-name", m.name + (m.attr ? " \u00b7 " + m.func + "(" + m.attr + ")" : " \u00b7 " + m.func)));
      const total = el("span", "total", "\u2013");
      total.dataset.total = info.name + "/" + m.name;
      box.append(mh, total);
      if (info.bucket) {
        // A bucketed view: a column per bucket of the total, then the
        // groups of the current bucket.
        const sub = el("div", "sub");
        const cols = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        cols.setAttribute("class", "cols");
        cols.setAttribute("viewBox", "0 0 " + BUCKETS * 10 + " 30");
        cols.setAttribute("preserveAspectRatio", "none");
        const axis = el("div", "axis");
        axis.append(el("span"), el("span"));
        const bars = el("div", "bars");
        const more = el("div", "more");
        box.append(sub, cols, axis, bars, more);
        grid.append(box);
        v.els[m.name] = { total, sub, cols, axis, bars, more };
        v.rows[m.name] = new Map();
        continue;
      }
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "spark");
      svg.setAttribute("viewBox", "0 0 100 30");
      svg.setAttribute("preserveAspectRatio", "none");
      const area = document.createElementNS(svg.namespaceURI, "path");
      area.setAttribute("class", "area");
      const line = document.createElementNS(svg.namespaceURI, "path");
      svg.append(area, line);
      box.append(svg);
      const bars = el("div", "bars");
      const more = el("div", "more");
      box.append(bars, more);
      grid.append(box);
      v.els[m.name] = { total, area, line, bars, more };
      v.rows[m.name] = new Map();
      v.series[m.name] = [];
    }
    sec.append(grid);
    v.els.grid = grid;
    $("#views").append(sec);
    return v;
  }

  // One connection for every view: browsers allow only six HTTP/1.1
  // connections to a host. Each event names its view; each id lists every
  // view's version, so EventSource's own reconnection resumes them all.
  function connect() {
    const q = new URLSearchParams();
    for (const v of views) q.append("view", v.info.name);
    if (token) q.set("access_token", token);
    const es = new EventSource("v1/events?" + q);
    const byName = new Map(views.map((v) => [v.info.name, v]));
    const set = (s) => {
      for (const v of views) {
        v.state = s;
        v.els.conn.dataset.state = s;
        v.els.connText.textContent = s;
      }
      setConn();
    };
    es.onopen = () => set("live");
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // Refused (401, 403, 503): EventSource gives up; so do we, briefly.
        set("offline");
        setTimeout(connect, 3000);
      } else {
        set("connecting");
      }
    };
    es.addEventListener("snapshot", (ev) => {
      const s = JSON.parse(ev.data);
      const v = byName.get(s.view);
      if (!v) return;
      v.version = s.version;
      v.epoch = s.epoch || "";
      v.updatedMs = s.updated_ms;
      v.lost = s.lost || "";
      v.measures = s.measures || {};
      // A bucketed view's snapshot is a series: bucket -> measure -> group.
      v.buckets = s.buckets || {};
      v.from = s.from || "";
      render(v, true);
    });
    es.addEventListener("delta", (ev) => {
      const d = JSON.parse(ev.data);
      const v = byName.get(d.view);
      if (!v) return;
      if (d.epoch !== v.epoch && v.version > 0) {
        // Versions count within an epoch: one of another history says
        // nothing of this state. The gateway sends a snapshot first;
        // should a delta pass through, start from a fresh snapshot.
        es.close();
        connect();
        return;
      }
      if (d.version <= v.version) return;
      if (d.reset) {
        // The gateway turns a reset into a snapshot; should one pass
        // through, a new connection starts from a fresh snapshot.
        es.close();
        connect();
        return;
      }
      const changed = new Set();
      const fold = (into, deltas) => {
        for (const [m, groups] of Object.entries(deltas)) {
          changed.add(m);
          const cur = (into[m] ||= {});
          for (const [g, delta] of Object.entries(groups)) {
            const n = addStr(cur[g] || "0", delta);
            if (n === "0") delete cur[g]; else cur[g] = n;
          }
        }
      };
      if (d.buckets) {
        // Buckets before the snapshot's range are not in this state: a
        // delta alone would give partial numbers. Names are RFC 3339 UTC,
        // so they compare as strings.
        for (const [b, deltas] of Object.entries(d.buckets)) if (b >= v.from) fold((v.buckets[b] ||= {}), deltas);
      } else {
        fold(v.measures, d.deltas || {});
      }
      v.version = d.version;
      v.epoch = d.epoch;
      v.updatedMs = d.ts_ms;
      render(v, false, [...changed]);
    });
  }

  function tickAge(v) {
    v.els.age.textContent = "last change " + ago(v.updatedMs);
    // The lines run up to now, not to the last change.
    const now = Date.now();
    if (v.info.bucket) {
      if (v.from && bucketName(v, now) !== v.current) render(v, true);
      return;
    }
    for (const m of v.info.measures) {
      const series = v.series[m.name];
      if (series.length) spark(v.els[m.name], series.concat([[now, series[series.length - 1][1]]]));
    }
  }

  function render(v, all, changed) {
    v.els.version.textContent = "version " + v.version.toLocaleString("en");
    // A lost view's counters are incomplete: show none of them.
    v.els.lost.hidden = !v.lost;
    v.els.lost.textContent = v.lost ? "This view is unavailable: its counters are incomplete (" + v.lost + ")." : "";
    v.els.grid.hidden = !!v.lost;
    if (v.info.bucket) return renderBuckets(v, all);
    tickAge(v);
    const now = Date.now();
    for (const m of v.info.measures) {
      const groups = v.measures[m.name] || {};
      const e = v.els[m.name];
      let total = { c: 0n, s: 0 };
      for (const val of Object.values(groups)) total = add(total, dec(val));
      const t = v.lost ? "unavailable" : pretty(str(total));
      if (e.total.textContent !== t) {
        e.total.textContent = t;
        if (!all) { e.total.classList.add("bump"); requestAnimationFrame(() => requestAnimationFrame(() => e.total.classList.remove("bump"))); }
      }
      const series = v.series[m.name];
      series.push([now, Number(str(total))]);
      while (series.length > 2 && series[0][0] < now - SPARK_MS) series.shift();
      spark(e, series);
      if (all || !changed || changed.includes(m.name)) bars(v, m.name, groups);
    }
  }

  // Buckets start on multiples of their size since the epoch.
  function bucketStart(v, ms) {
    const size = v.info.bucket.size_s * 1000;
    return Math.floor(ms / size) * size;
  }
  const nameOf = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
  const bucketName = (v, ms) => nameOf(bucketStart(v, ms));
  function when(v, ms) {
    const d = new Date(ms);
    const day = d.toLocaleDateString("en", { month: "short", day: "numeric" });
    if (v.info.bucket.size_s % 86400 === 0) return day;
    return day + " " + d.toLocaleTimeString("en", { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  function renderBuckets(v, all) {
    v.els.age.textContent = "last change " + ago(v.updatedMs);
    const size = v.info.bucket.size_s * 1000;
    const cur = bucketStart(v, Date.now());
    v.current = nameOf(cur);
    const starts = [];
    for (let i = BUCKETS - 1; i >= 0; i--) starts.push(cur - i * size);
    // Buckets that left the chart leave the state, and so do their deltas.
    const first = nameOf(starts[0]);
    if (v.from < first) {
      v.from = first;
      for (const b of Object.keys(v.buckets)) if (b < first) delete v.buckets[b];
    }
    for (const m of v.info.measures) {
      const e = v.els[m.name];
      const totals = starts.map((ms) => {
        let t = { c: 0n, s: 0 };
        for (const val of Object.values(((v.buckets[nameOf(ms)] || {})[m.name]) || {})) t = add(t, dec(val));
        return str(t);
      });
      const now = totals[totals.length - 1];
      const t = v.lost ? "unavailable" : pretty(now);
      if (e.total.textContent !== t) {
        e.total.textContent = t;
        if (!all) { e.total.classList.add("bump"); requestAnimationFrame(() => requestAnimationFrame(() => e.total.classList.remove("bump"))); }
      }
      e.sub.textContent = "in the " + v.info.bucket.size + " from " + when(v, cur);
      columns(v, e, starts, totals);
      e.axis.children[0].textContent = when(v, starts[0]);
      e.axis.children[1].textContent = "now";
      bars(v, m.name, ((v.buckets[v.current] || {})[m.name]) || {});
    }
  }

  // One column per bucket, the current one last and brighter; negative
  // totals (stream-time buckets can have them) hang below a zero line.
  function columns(v, e, starts, totals) {
    const nums = totals.map(Number);
    const hi = Math.max(0, ...nums), lo = Math.min(0, ...nums);
    const span = hi - lo || 1;
    const y = (n) => 29 - ((n - lo) / span) * 28;
    const ns = e.cols.namespaceURI;
    while (e.cols.childNodes.length < starts.length) {
      const r = document.createElementNS(ns, "rect");
      r.append(document.createElementNS(ns, "title"));
      e.cols.append(r);
    }
    starts.forEach((ms, i) => {
      const r = e.cols.childNodes[i];
      const top = Math.min(y(nums[i]), y(0)), h = Math.max(Math.abs(y(nums[i]) - y(0)), nums[i] ? 0.6 : 0);
      r.setAttribute("x", i * 10 + 1);
      r.setAttribute("width", 8);
      r.setAttribute("y", top.toFixed(2));
      r.setAttribute("height", h.toFixed(2));
      r.setAttribute("class", (i === starts.length - 1 ? "cur" : "") + (nums[i] < 0 ? " neg" : ""));
      r.firstChild.textContent = when(v, ms) + ": " + pretty(totals[i]);
    });
  }

  function spark(e, series) {
    if (series.length < 2) { e.line.setAttribute("d", ""); e.area.setAttribute("d", ""); return; }
    const t0 = series[0][0], t1 = Math.max(series[series.length - 1][0], t0 + 1);
    let lo = Infinity, hi = -Infinity;
    for (const [, y] of series) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const pts = series.map(([t, y]) => [((t - t0) / (t1 - t0)) * 100, 28 - ((y - lo) / (hi - lo)) * 26]);
    // Steps, not slopes: a total holds its value until the next change.
    const d = pts.map(([x, y], i) => (i ? "H" + x.toFixed(2) + " V" : "M" + x.toFixed(2) + " ") + y.toFixed(2)).join(" ");
    e.line.setAttribute("d", d);
    e.area.setAttribute("d", d + " L" + pts[pts.length - 1][0].toFixed(2) + " 30 L" + pts[0][0].toFixed(2) + " 30 Z");
  }

  function bars(v, name, groups) {
    const e = v.els[name];
    const rows = v.rows[name];
    const entries = Object.entries(groups).map(([g, s]) => [g, s, Number(s)]);
    entries.sort((a, b) => Math.abs(b[2]) - Math.abs(a[2]) || (a[0] < b[0] ? -1 : 1));
    const shown = entries.slice(0, MAX_BARS);
    const max = Math.max(1e-12, ...shown.map((x) => Math.abs(x[2])));
    const keep = new Set();
    shown.forEach(([g, s, n], i) => {
      let r = rows.get(g);
      if (!r) {
        r = el("div", "bar");
        const lab = el("span", "label", label(g));
        lab.title = label(g);
        const track = el("div", "track");
        const fill = el("div", "fill");
        track.append(fill);
        const val = el("span", "value");
        val.dataset.value = v.info.name + "/" + name + "/" + g;
        r.append(lab, track, val);
        r._fill = fill;
        r._val = val;
        rows.set(g, r);
      }
      r._fill.style.width = ((Math.abs(n) / max) * 100).toFixed(2) + "%";
      r._fill.classList.toggle("neg", n < 0);
      r._val.textContent = pretty(s);
      if (e.bars.children[i] !== r) e.bars.insertBefore(r, e.bars.children[i] || null);
      keep.add(g);
    });
    for (const [g, r] of rows) if (!keep.has(g)) { r.remove(); rows.delete(g); }
    e.more.textContent = entries.length > MAX_BARS ? "and " + (entries.length - MAX_BARS) + " more groups" : "";
  }

  start();
})();
