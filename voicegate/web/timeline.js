// VoiceGate call timeline and persona comparison charts: SVG built here, nothing fetched.
// Pure drawing: callTimeline(events, opts) -> <svg>, compareCharts(table) -> [<figure>...].
// The operators' panel (operators.js) feeds them; tests read window.vgTimeline.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LANE_H = 26;
  const TOP = 24;            // the time axis
  const LEFT = 64;           // lane labels
  const TEXT_ROW_H = 15;
  const TEXT_ROWS = 3;       // per party; a text that finds no free row goes to the last one
  const CHAR_PX = 6.4;       // 11px sans: a width estimate that needs no layout pass

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(v, d) { const n = Number(v); return Number.isFinite(n) ? n : d; }

  function mergeIntervals(list) {
    const xs = list.filter((x) => x[1] > x[0]).sort((a, b) => a[0] - b[0]);
    const out = [];
    for (const [s, e] of xs) {
      const last = out[out.length - 1];
      if (last && s <= last[1]) last[1] = Math.max(last[1], e);
      else out.push([s, e]);
    }
    return out;
  }

  function intersect(a, b) {
    const out = [];
    let i = 0, j = 0;
    while (i < a.length && j < b.length) {
      const s = Math.max(a[i][0], b[j][0]);
      const e = Math.min(a[i][1], b[j][1]);
      if (e > s) out.push([s, e]);
      if (a[i][1] < b[j][1]) i++; else j++;
    }
    return out;
  }

  function parseWords(words) {
    let list = words;
    if (typeof list === "string") {
      try { list = JSON.parse(list); } catch (e) { return []; }
    }
    if (!Array.isArray(list)) return [];
    return list.filter((w) => Array.isArray(w) && w.length >= 3)
      .map((w) => ({ text: String(w[0]), s: num(w[1], 0), e: num(w[2], 0) }));
  }

  // Everything the picture shows, from a call's events (wire fields + type), in call ms.
  function buildModel(events, nowMs) {
    const m = {
      started: null, ended: null, caller: [], agent: [], callerText: [], bargeins: [],
      dtmf: [], transfers: [], reanchors: [], errors: [], openCaller: null, endMs: 0,
    };
    const partials = new Map();  // caller transcript not final yet, by start_ms
    for (const ev of events) {
      const t = num(ev.t, 0);
      m.endMs = Math.max(m.endMs, t);
      switch (ev.type) {
        case "call.started": m.started = ev; break;
        case "call.ended": m.ended = ev; m.endMs = Math.max(m.endMs, num(ev.duration_ms, t)); break;
        case "caller.speech": m.caller.push([num(ev.start_ms, 0), num(ev.end_ms, 0)]); break;
        case "transcript.agent": {
          const s = num(ev.start_ms, 0);
          const cut = ev.cut_at_ms === undefined || ev.cut_at_ms === null ? null : num(ev.cut_at_ms, null);
          m.agent.push({
            s, e: Math.max(s, num(ev.end_ms, s)), cutAt: cut, heard: ev.is_heard !== false,
            text: ev.text || "", cutText: ev.cut_text || "",
          });
          m.endMs = Math.max(m.endMs, num(ev.end_ms, 0));
          break;
        }
        case "transcript.caller": {
          const item = {
            s: num(ev.start_ms, t), e: num(ev.end_ms, t), text: ev.text || "",
            words: parseWords(ev.words), final: ev.final !== false && ev.final !== "false",
          };
          if (item.final) { partials.delete(item.s); m.callerText.push(item); }
          else partials.set(item.s, item);
          break;
        }
        case "bargein":
          m.bargeins.push({
            onset: num(ev.caller_onset_ms, t), stop: num(ev.agent_stop_ms, t),
            latency: num(ev.latency_ms, 0), cutText: ev.cut_text || "",
          });
          break;
        case "dtmf": m.dtmf.push({ t, digit: ev.digit }); break;
        case "call.transfer": {
          // one mark per transfer: its later results (handed_off, the far end's outcome) join it
          const last = m.transfers[m.transfers.length - 1];
          if (last && last.destination === (ev.destination || "") && ev.result !== "requested") last.results.push(ev.result);
          else m.transfers.push({ t, results: [ev.result], destination: ev.destination || "", to: ev.to || "" });
          break;
        }
        case "call.reanchored":
          m.reanchors.push({ t, compute: num(ev.compute_ms, 0), kept: num(ev.kept_frames, 0) });
          break;
        case "error": m.errors.push({ t, code: ev.code }); break;
        default: break;
      }
    }
    for (const p of partials.values()) m.callerText.push(p);
    if (!m.ended && nowMs !== undefined) m.endMs = Math.max(m.endMs, nowMs);
    // a caller who is speaking now: the last barge-in's onset is after every closed turn
    const lastTurnEnd = m.caller.reduce((x, c) => Math.max(x, c[1]), -1);
    const lastOnset = m.bargeins.reduce((x, b) => Math.max(x, b.onset), -1);
    if (!m.ended && lastOnset > lastTurnEnd) m.openCaller = [lastOnset, m.endMs];
    m.caller.sort((a, b) => a[0] - b[0]);
    m.agent.sort((a, b) => a.s - b.s);
    m.callerText.sort((a, b) => a.s - b.s);
    const agentHeard = mergeIntervals(m.agent.map((a) => [a.s, a.cutAt !== null ? Math.min(a.e, a.cutAt) : a.e]));
    const callerAll = mergeIntervals(m.caller.concat(m.openCaller ? [m.openCaller] : []));
    m.overlaps = intersect(callerAll, agentHeard);
    return m;
  }

  function transferLabel(tr) { return "transfer " + tr.destination + ": " + tr.results.join(" \u2192 "); }

  function tickStep(durationS, pxPerS) {
    for (const step of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600]) if (step * pxPerS >= 60) return step;
    return 1200;
  }

  function fmtTime(s) {
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    return m + ":" + String(s % 60).padStart(2, "0");
  }

  // Text rows that keep labels apart: the first row whose last label ends left of x.
  function rowPlacer(rows) {
    const ends = new Array(rows).fill(-Infinity);
    return (x, width) => {
      let r = ends.findIndex((end) => end < x);
      if (r < 0) r = rows - 1;
      ends[r] = x + width + 6;
      return r;
    };
  }

  // The call's timeline: caller and agent lanes over time, overlaps, barge-ins, DTMF,
  // transfers, re-anchors, and both transcripts under the lanes (heard / cut marked).
  function callTimeline(events, opts) {
    const o = Object.assign({ width: 1000, nowMs: undefined, minPxPerS: 40 }, opts || {});
    const m = buildModel(events, o.nowMs);
    const durS = Math.max(1, m.endMs / 1000);
    // the whole call in the view when it fits at 40 px/s or more, else scroll
    const labels = m.transfers.map((tr) => transferLabel(tr).length).concat(m.ended ? [9 + m.ended.reason.length] : []);
    const pad = Math.max(60, ...labels.map((n) => n * CHAR_PX + 24));  // room for the last labels
    const pxPerS = Math.max(o.minPxPerS, (o.width - LEFT - pad - 4) / durS);
    const x = (ms) => LEFT + (ms / 1000) * pxPerS;
    const callerY = TOP + 8;
    const agentY = callerY + LANE_H + 10;
    const textTop = agentY + LANE_H + 16;
    const callerTextY = textTop;
    const agentTextY = textTop + TEXT_ROWS * TEXT_ROW_H + 8;
    const height = agentTextY + TEXT_ROWS * TEXT_ROW_H + 8;
    const width = Math.ceil(x(m.endMs) + pad);
    const svg = el("svg", {
      xmlns: SVG_NS, class: "vg-timeline", width, height, viewBox: `0 0 ${width} ${height}`,
      role: "img", "aria-label": "call timeline",
    });
    const defs = el("defs");
    const marker = el("marker", { id: "vg-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
    const hatch = el("pattern", { id: "vg-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
    hatch.appendChild(el("rect", { width: 3, height: 6, class: "hatch" }));
    defs.append(marker, hatch);
    svg.appendChild(defs);

    // axis
    const axis = el("g", { class: "axis" });
    const step = tickStep(durS, pxPerS);
    for (let s = 0; s <= durS + 0.001; s += step) {
      axis.appendChild(el("line", { x1: x(s * 1000), x2: x(s * 1000), y1: TOP - 6, y2: agentY + LANE_H + 4, class: "grid" }));
      axis.appendChild(el("text", { x: x(s * 1000), y: TOP - 9, class: "tick", "text-anchor": "middle" }, fmtTime(s)));
    }
    svg.appendChild(axis);
    // lanes
    const lanes = el("g", { class: "lanes" });
    lanes.appendChild(el("rect", { x: LEFT, y: callerY, width: width - LEFT - 10, height: LANE_H, class: "lane-bg" }));
    lanes.appendChild(el("rect", { x: LEFT, y: agentY, width: width - LEFT - 10, height: LANE_H, class: "lane-bg" }));
    lanes.appendChild(el("text", { x: 6, y: callerY + 17, class: "lane-label" }, "Caller"));
    lanes.appendChild(el("text", { x: 6, y: agentY + 17, class: "lane-label" }, "Agent"));
    lanes.appendChild(el("text", { x: 6, y: callerTextY + 11, class: "lane-label small" }, "caller says"));
    lanes.appendChild(el("text", { x: 6, y: agentTextY + 11, class: "lane-label small" }, "agent says"));
    svg.appendChild(lanes);
    // overlaps: a band over both lanes
    const ov = el("g", { class: "overlaps" });
    for (const [s, e] of m.overlaps) {
      ov.appendChild(el("rect", { x: x(s), y: callerY - 3, width: Math.max(1, x(e) - x(s)), height: agentY + LANE_H + 3 - (callerY - 3), class: "overlap" }, undefined));
    }
    svg.appendChild(ov);
    // caller segments
    const cg = el("g", { class: "caller-lane" });
    for (const [s, e] of m.caller) {
      const r = el("rect", { x: x(s), y: callerY, width: Math.max(1.5, x(e) - x(s)), height: LANE_H, rx: 3, class: "seg caller" });
      r.appendChild(el("title", {}, `caller ${(s / 1000).toFixed(2)}-${(e / 1000).toFixed(2)} s`));
      cg.appendChild(r);
    }
    if (m.openCaller) {
      const [s, e] = m.openCaller;
      cg.appendChild(el("rect", { x: x(s), y: callerY, width: Math.max(1.5, x(e) - x(s)), height: LANE_H, rx: 3, class: "seg caller open" }));
    }
    svg.appendChild(cg);
    // agent segments: heard part solid, the part cut by a barge-in hatched
    const ag = el("g", { class: "agent-lane" });
    for (const a of m.agent) {
      const heardEnd = a.cutAt !== null ? Math.min(a.e, a.cutAt) : a.e;
      const r = el("rect", { x: x(a.s), y: agentY, width: Math.max(1.5, x(heardEnd) - x(a.s)), height: LANE_H, rx: 3, class: "seg agent" + (a.heard ? "" : " cut") });
      r.appendChild(el("title", {}, `agent ${(a.s / 1000).toFixed(2)}-${(a.e / 1000).toFixed(2)} s` + (a.heard ? "" : ", cut at " + (heardEnd / 1000).toFixed(2) + " s")));
      ag.appendChild(r);
      if (!a.heard) {
        ag.appendChild(el("line", { x1: x(heardEnd), x2: x(heardEnd), y1: agentY - 2, y2: agentY + LANE_H + 2, class: "cut-mark" }));
      }
    }
    svg.appendChild(ag);
    // barge-ins: caller onset -> agent stop, with the latency
    const bg = el("g", { class: "bargeins" });
    for (const b of m.bargeins) {
      const g = el("g", { class: "bargein" });
      g.appendChild(el("line", { x1: x(b.onset), y1: callerY + LANE_H, x2: x(b.stop), y2: agentY + LANE_H / 2, class: "bargein-arrow", "marker-end": "url(#vg-arrow)" }));
      g.appendChild(el("text", { x: x(b.stop) + 4, y: agentY + LANE_H + 12, class: "bargein-label" }, "barge-in " + b.latency + " ms"));
      g.appendChild(el("title", {}, `barge-in: caller at ${(b.onset / 1000).toFixed(2)} s, agent stopped ${b.latency} ms later` + (b.cutText ? `; not heard: ${b.cutText}` : "")));
      bg.appendChild(g);
    }
    svg.appendChild(bg);
    // DTMF, transfers, re-anchors, errors, the end
    const marks = el("g", { class: "marks" });
    for (const d of m.dtmf) {
      const g = el("g", { class: "dtmf" });
      g.appendChild(el("circle", { cx: x(d.t), cy: callerY + LANE_H / 2, r: 8 }));
      g.appendChild(el("text", { x: x(d.t), y: callerY + LANE_H / 2 + 4, "text-anchor": "middle" }, d.digit));
      marks.appendChild(g);
    }
    for (const tr of m.transfers) {
      const g = el("g", { class: "transfer" });
      g.appendChild(el("line", { x1: x(tr.t), x2: x(tr.t), y1: TOP - 4, y2: agentY + LANE_H + 4 }));
      g.appendChild(el("text", { x: x(tr.t) + 4, y: callerY + 12 }, transferLabel(tr)));
      marks.appendChild(g);
    }
    for (const r of m.reanchors) {
      const g = el("g", { class: "reanchor" });
      const cx = x(r.t), cy = TOP;
      g.appendChild(el("path", { d: `M${cx},${cy - 6} L${cx + 6},${cy} L${cx},${cy + 6} L${cx - 6},${cy} z` }));
      g.appendChild(el("title", {}, `re-anchored at ${(r.t / 1000).toFixed(1)} s (${r.compute.toFixed(1)} ms, ${r.kept} frames kept)`));
      marks.appendChild(g);
    }
    for (const e of m.errors) {
      marks.appendChild(el("text", { x: x(e.t), y: TOP + 4, class: "error-mark" }, "! " + e.code));
    }
    if (m.ended) {
      const g = el("g", { class: "end" });
      g.appendChild(el("line", { x1: x(m.endMs), x2: x(m.endMs), y1: TOP - 6, y2: agentY + LANE_H + 4 }));
      g.appendChild(el("text", { x: x(m.endMs) + 4, y: agentY + 17 }, "ended: " + m.ended.reason));
      marks.appendChild(g);
    } else if (o.nowMs !== undefined) {
      marks.appendChild(el("line", { x1: x(m.endMs), x2: x(m.endMs), y1: TOP - 6, y2: agentY + LANE_H + 4, class: "now" }));
    }
    svg.appendChild(marks);
    // transcripts, aligned under the lanes at their start times
    const tg = el("g", { class: "transcripts" });
    const placeCaller = rowPlacer(TEXT_ROWS);
    for (const c of m.callerText) {
      const text = c.words.length ? c.words.map((w) => w.text).join(" ") : c.text;
      if (!text.trim()) continue;
      const w = text.length * CHAR_PX;
      const row = placeCaller(x(c.s), w);
      const node = el("text", { x: x(c.s), y: callerTextY + 11 + row * TEXT_ROW_H, class: "said caller" + (c.final ? "" : " partial") });
      if (c.words.length) {
        // each word at its own time when the words fit there, else run on
        let cursor = x(c.s);
        for (const word of c.words) {
          const wx = Math.max(cursor, x(word.s));
          node.appendChild(el("tspan", { x: wx }, word.text));
          cursor = wx + (word.text.length + 1) * CHAR_PX;
        }
      } else {
        node.textContent = c.text;
      }
      tg.appendChild(node);
    }
    const placeAgent = rowPlacer(TEXT_ROWS);
    for (const a of m.agent) {
      const heardText = (a.text || "").trim();
      const cutText = (a.cutText || "").trim();
      if (!heardText && !cutText) continue;
      const w = (heardText.length + cutText.length + 1) * CHAR_PX;
      const row = placeAgent(x(a.s), w);
      const node = el("text", { x: x(a.s), y: agentTextY + 11 + row * TEXT_ROW_H, class: "said agent" });
      if (heardText) node.appendChild(el("tspan", { class: "heard" }, heardText + (cutText ? " " : "")));
      if (cutText) node.appendChild(el("tspan", { class: "cut-text" }, cutText));
      tg.appendChild(node);
    }
    svg.appendChild(tg);
    svg.vgModel = m;
    return svg;
  }

  // --- persona comparison -------------------------------------------------------------------

  const METRICS = [
    ["duration_s", "Call duration", (v) => fmtTime(Math.round(v))],
    ["gap_p50_ms", "Response gap p50 (per call)", (v) => Math.round(v) + " ms"],
    ["gap_p90_ms", "Response gap p90 (per call)", (v) => Math.round(v) + " ms"],
    ["bargeins_per_min", "Barge-ins per minute", (v) => v.toFixed(1)],
    ["overlap_share", "Overlap share of talk", (v) => (v * 100).toFixed(1) + " %"],
  ];
  const REASON_COLORS = ["#2a6f97", "#e07a1f", "#6a994e", "#9d4edd", "#bc4749", "#577590", "#f2c14e", "#8d99ae"];
  const ROW_H = 22;
  const NAME_W = 120;
  const PLOT_W = 280;
  const VALUE_W = 62;       // the median's column, right of the plot

  function chartFrame(title, rows) {
    const fig = document.createElement("figure");
    fig.className = "vg-chart";
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    const height = rows * ROW_H + 30;
    const w = NAME_W + PLOT_W + VALUE_W + 4;
    const svg = el("svg", { xmlns: SVG_NS, width: w, height, viewBox: `0 0 ${w} ${height}` });
    fig.append(cap, svg);
    return [fig, svg];
  }

  // one box per persona: whiskers p10-p90, box p25-p75, the median line
  function boxChart(personas, key, title, fmt) {
    const [fig, svg] = chartFrame(title, personas.length);
    fig.dataset.metric = key;
    let max = 0;
    for (const p of personas) max = Math.max(max, num(p[key] && p[key].p90, 0));
    if (max <= 0) max = 1;
    const sx = (v) => NAME_W + (v / max) * PLOT_W;
    personas.forEach((p, i) => {
      const s = p[key] || {};
      const y = 8 + i * ROW_H;
      svg.appendChild(el("text", { x: NAME_W - 6, y: y + 11, "text-anchor": "end", class: "name" }, p.persona));
      if (!s.n) {
        svg.appendChild(el("text", { x: NAME_W, y: y + 11, class: "none" }, "no data"));
        return;
      }
      const g = el("g", { class: "box" });
      g.appendChild(el("line", { x1: sx(s.p10), x2: sx(s.p90), y1: y + 7, y2: y + 7, class: "whisker" }));
      g.appendChild(el("rect", { x: sx(s.p25), y: y + 1, width: Math.max(1.5, sx(s.p75) - sx(s.p25)), height: 12, class: "iqr" }));
      g.appendChild(el("line", { x1: sx(s.p50), x2: sx(s.p50), y1: y, y2: y + 14, class: "median" }));
      g.appendChild(el("title", {}, `${p.persona}: median ${fmt(s.p50)}, middle half ${fmt(s.p25)}-${fmt(s.p75)}, p10-p90 ${fmt(s.p10)}-${fmt(s.p90)} (${s.n} calls)`));
      svg.appendChild(g);
      svg.appendChild(el("text", { x: NAME_W + PLOT_W + VALUE_W, y: y + 11, "text-anchor": "end", class: "value" }, fmt(s.p50)));
    });
    const axisY = 8 + personas.length * ROW_H + 4;
    svg.appendChild(el("line", { x1: NAME_W, x2: NAME_W + PLOT_W, y1: axisY, y2: axisY, class: "axis" }));
    svg.appendChild(el("text", { x: NAME_W, y: axisY + 12, class: "tick" }, fmt(0)));
    svg.appendChild(el("text", { x: NAME_W + PLOT_W, y: axisY + 12, "text-anchor": "end", class: "tick" }, fmt(max)));
    return fig;
  }

  function transferChart(personas) {
    const [fig, svg] = chartFrame("Transfer rate", personas.length);
    fig.dataset.metric = "transfer_rate";
    personas.forEach((p, i) => {
      const y = 8 + i * ROW_H;
      svg.appendChild(el("text", { x: NAME_W - 6, y: y + 11, "text-anchor": "end", class: "name" }, p.persona));
      svg.appendChild(el("rect", { x: NAME_W, y: y + 1, width: PLOT_W, height: 12, class: "track" }));
      svg.appendChild(el("rect", { x: NAME_W, y: y + 1, width: Math.max(0, p.transfer_rate * PLOT_W), height: 12, class: "bar" }));
      svg.appendChild(el("text", { x: NAME_W + PLOT_W + VALUE_W, y: y + 11, "text-anchor": "end", class: "value" }, (p.transfer_rate * 100).toFixed(0) + " %"));
    });
    return fig;
  }

  function reasonsChart(personas) {
    const reasons = [];
    for (const p of personas) for (const r of Object.keys(p.end_reasons || {})) if (!reasons.includes(r)) reasons.push(r);
    const [fig, svg] = chartFrame("End reasons", personas.length + 1);
    fig.dataset.metric = "end_reasons";
    personas.forEach((p, i) => {
      const y = 8 + i * ROW_H;
      svg.appendChild(el("text", { x: NAME_W - 6, y: y + 11, "text-anchor": "end", class: "name" }, p.persona));
      let at = NAME_W;
      for (const r of reasons) {
        const n = (p.end_reasons || {})[r] || 0;
        if (!n) continue;
        const w = (n / p.calls) * PLOT_W;
        const rect = el("rect", { x: at, y: y + 1, width: w, height: 12, fill: REASON_COLORS[reasons.indexOf(r) % REASON_COLORS.length], class: "reason" });
        rect.appendChild(el("title", {}, `${p.persona}: ${r} ${n} of ${p.calls}`));
        svg.appendChild(rect);
        at += w;
      }
      svg.appendChild(el("text", { x: NAME_W + PLOT_W + VALUE_W, y: y + 11, "text-anchor": "end", class: "value" }, p.calls + " calls"));
    });
    // legend
    let lx = 4;
    const ly = 8 + personas.length * ROW_H + 4;
    reasons.forEach((r, k) => {
      svg.appendChild(el("rect", { x: lx, y: ly, width: 10, height: 10, fill: REASON_COLORS[k % REASON_COLORS.length] }));
      svg.appendChild(el("text", { x: lx + 13, y: ly + 9, class: "legend" }, r));
      lx += 24 + r.length * CHAR_PX;
    });
    const need = lx + 10;
    if (need > NAME_W + PLOT_W + VALUE_W + 4) { svg.setAttribute("width", need); svg.setAttribute("viewBox", `0 0 ${need} ${svg.getAttribute("height")}`); }
    return fig;
  }

  function compareCharts(table) {
    const personas = table.personas || [];
    const figs = METRICS.map(([key, title, fmt]) => boxChart(personas, key, title, fmt));
    figs.push(transferChart(personas), reasonsChart(personas));
    return figs;
  }

  window.vgTimeline = { buildModel, callTimeline, compareCharts, mergeIntervals, intersect };
})();
