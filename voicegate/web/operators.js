// VoiceGate operators' panel: live calls (polled), a call's timeline (Redis history + the live
// feed), ended calls by persona/number/reason, and the persona comparison. Needs the viewer or
// the editor token. Drawing is timeline.js's; state for tests: window.vg.ops.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const LIVE_POLL_MS = 1000;
  const REDRAW_MS = 500;
  const PERIODS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

  const ops = {
    live: [],          // the last /api/calls/live rows
    liveAt: 0,         // performance.now() when they came
    liveError: null,
    view: null,        // the open call: {callId, events, ids, live, feed, timer}
    ended: [],         // the last ended-calls list
    comparison: null,  // the last /api/compare body
    renders: 0,
    historyLoads: 0,   // calls' histories read from Redis
  };

  function token() { return $("viewer-token").value.trim() || $("editor-token").value.trim(); }
  function headers() { return { Authorization: "Bearer " + token() }; }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  // --- live calls --------------------------------------------------------------------------

  async function refreshLive() {
    if (!token()) { $("ops-status").textContent = "enter the viewer (or editor) token to watch calls"; return; }
    let resp;
    try { resp = await fetch("/api/calls/live", { headers: headers() }); } catch (err) { return; }
    if (!resp.ok) {
      ops.liveError = resp.status;
      $("ops-status").textContent = resp.status === 401 ? "the viewer token was refused" : "live calls: " + resp.status;
      return;
    }
    ops.liveError = null;
    ops.live = (await resp.json()).calls;
    ops.liveAt = performance.now();
    $("ops-status").textContent = ops.live.length + " live call" + (ops.live.length === 1 ? "" : "s");
    $("live-calls").replaceChildren(...ops.live.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.callId = c.call_id;
      if (ops.view && ops.view.callId === c.call_id) tr.className = "open";
      cell(tr, c.call_id, "id");
      cell(tr, c.leg);
      cell(tr, c.persona);
      cell(tr, c.from || "-");
      cell(tr, fmtDuration(c.duration_ms), "num");
      cell(tr, c.state, "state " + c.state);
      tr.addEventListener("click", () => open(c.call_id));
      return tr;
    }));
  }

  // --- one call's timeline -----------------------------------------------------------------

  function close() {
    const v = ops.view;
    if (!v) return;
    if (v.feed) v.feed.abort();
    clearInterval(v.timer);
    ops.view = null;
  }

  function addEvent(v, ev) {
    if (ev.id && v.ids.has(ev.id)) return false;
    if (ev.id) v.ids.add(ev.id);
    v.events.push(ev);
    if (ev.type === "call.ended") v.live = false;
    return true;
  }

  function nowMs(v) {
    if (!v.live) return undefined;
    const row = ops.live.find((c) => c.call_id === v.callId);
    const lastT = v.events.reduce((x, e) => Math.max(x, Number(e.t) || 0), 0);
    if (!row) return lastT;
    return Math.max(lastT, row.duration_ms + (performance.now() - ops.liveAt));
  }

  function render() {
    const v = ops.view;
    if (!v) return;
    const events = v.events.slice().sort((a, b) => (Number(a.t) || 0) - (Number(b.t) || 0));
    const wrap = $("timeline");
    const atRight = wrap.scrollLeft + wrap.clientWidth >= wrap.scrollWidth - 30;
    const svg = window.vgTimeline.callTimeline(events, { width: wrap.clientWidth || 1000, nowMs: nowMs(v) });
    wrap.replaceChildren(svg);
    if (v.live && atRight) wrap.scrollLeft = wrap.scrollWidth;
    v.model = svg.vgModel;
    ops.renders++;
    const m = v.model;
    const who = m.started ? `${m.started.persona} · ${m.started.leg} · ${m.started.from || "?"} → ${m.started.to || "?"}` : "";
    const state = v.live ? "live" : m.ended ? `ended: ${m.ended.reason} after ${fmtDuration(m.ended.duration_ms)}` : "no end recorded";
    $("call-title").textContent = `${v.callId} ${who ? "· " + who : ""} · ${state}` + (v.error ? ` (history: ${v.error})` : "");
    const d = m.ended && m.ended.dynamics;
    $("call-summary").textContent = d
      ? `caller ${fmtDuration(d.caller_talk_ms)}, agent ${fmtDuration(d.agent_talk_ms)}, overlap ${(d.overlap_ms / 1000).toFixed(1)} s, ` +
        `${m.bargeins.length} barge-ins, response gap p50 ${d.response_gap_p50_ms == null ? "-" : Math.round(d.response_gap_p50_ms) + " ms"}`
      : `${m.caller.length} caller turns, ${m.agent.length} agent segments, ${m.bargeins.length} barge-ins`;
  }

  async function follow(v) {
    const ctrl = new AbortController();
    v.feed = ctrl;
    const resp = await fetch("/api/events?call_id=" + encodeURIComponent(v.callId), { headers: headers(), signal: ctrl.signal });
    if (!resp.ok) throw new Error("live feed: " + resp.status);
    (async () => {
      try {
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
            if (data && ops.view === v && addEvent(v, JSON.parse(data))) render();
          }
        }
      } catch (err) {
        if (err.name !== "AbortError") console.warn("operators feed:", err);
      }
    })();
  }

  // Open a call's view: live calls follow their feed; ended ones come from Redis only.
  async function open(callId) {
    close();
    const v = { callId, events: [], ids: new Set(), live: true, feed: null, timer: null, model: null, error: null };
    ops.view = v;
    $("call-view").hidden = false;
    $("call-title").textContent = callId + " · loading";
    try {
      await follow(v);  // subscribe first: nothing falls between the history and the feed
      const resp = await fetch("/api/calls/" + encodeURIComponent(callId) + "/events", { headers: headers() });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) throw new Error(body.detail || String(resp.status));
      ops.historyLoads++;
      if (ops.view !== v) return;
      v.error = body.history_error || null;  // Redis away: a live call shows what comes from now on
      for (const ev of body.events) addEvent(v, ev);
      if (!body.live || v.events.some((e) => e.type === "call.ended")) {
        v.live = false;
        v.feed.abort();
      }
    } catch (err) {
      if (v.feed) v.feed.abort();
      v.error = String(err.message || err);
      $("call-title").textContent = callId + " · " + v.error;
      return;
    }
    if (v.live) v.timer = setInterval(() => { if (v.live) render(); else clearInterval(v.timer); }, REDRAW_MS);
    render();
    refreshLive();
  }

  // --- ended calls -------------------------------------------------------------------------

  function periodQuery(select) {
    const s = PERIODS[select.value] || PERIODS["24h"];
    return "since_ms=" + (Date.now() - s * 1000);
  }

  async function findCalls() {
    const q = [periodQuery($("find-period"))];
    for (const [id, key] of [["find-persona", "persona"], ["find-number", "number"], ["find-reason", "reason"]]) {
      const value = $(id).value.trim();
      if (value) q.push(key + "=" + encodeURIComponent(value));
    }
    const resp = await fetch("/api/calls?" + q.join("&"), { headers: headers() });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { $("find-status").textContent = "cannot list calls: " + (body.detail || resp.status); return []; }
    ops.ended = body.calls;
    $("find-status").textContent = body.calls.length + " calls" + (body.truncated ? " (the period holds more than one read covers: narrow it)" : "");
    $("ended-calls").replaceChildren(...body.calls.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.callId = c.call_id;
      cell(tr, new Date(c.ended_ts).toLocaleString());
      cell(tr, c.call_id, "id");
      cell(tr, c.persona);
      cell(tr, c.from || "-");
      cell(tr, fmtDuration(c.duration_ms), "num");
      cell(tr, c.reason);
      cell(tr, String(c.bargeins), "num");
      tr.addEventListener("click", () => open(c.call_id));
      return tr;
    }));
    return body.calls;
  }

  // --- persona comparison ------------------------------------------------------------------

  async function compare() {
    const resp = await fetch("/api/compare?" + periodQuery($("compare-period")), { headers: headers() });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { $("compare-status").textContent = "cannot compare: " + (body.detail || resp.status); return null; }
    ops.comparison = body;
    $("compare-status").textContent = `${body.calls} calls, ${body.personas.length} personas` + (body.truncated ? " (truncated: narrow the period)" : "");
    $("compare").replaceChildren(...window.vgTimeline.compareCharts(body));
    return body;
  }

  $("find").addEventListener("click", findCalls);
  $("open-id").addEventListener("click", () => { const id = $("call-id").value.trim(); if (id) open(id); });
  $("run-compare").addEventListener("click", compare);
  $("close-call").addEventListener("click", () => { close(); $("call-view").hidden = true; });
  setInterval(refreshLive, LIVE_POLL_MS);
  refreshLive();

  Object.assign(ops, { open, close, render, refreshLive, findCalls, compare });
  window.vg.ops = ops;
})();
