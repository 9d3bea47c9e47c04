// VoiceGate page: call a persona over WebRTC, show its live events, edit personas.
// Plain browser JavaScript, no build step. State for tests and the curious: window.vg.
"use strict";

const $ = (id) => document.getElementById(id);

const vg = {
  callId: null,
  pc: null,
  state: "idle",
  events: [],      // every event received for the current/last call (wire fields + type)
  transcript: [],  // transcript.agent texts
  error: null,
  feed: null,      // AbortController of the event feed
  // inbound audio as the browser measured it (getStats inbound-rtp)
  async stats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let out = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out = {
          totalAudioEnergy: s.totalAudioEnergy || 0,
          totalSamplesReceived: s.totalSamplesReceived || 0,
          packetsReceived: s.packetsReceived || 0,
          jitterBufferDelay: s.jitterBufferDelay || 0,
          jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
          audioLevel: s.audioLevel || 0,
        };
      }
    });
    return out;
  },
};
window.vg = vg;

// --- tokens ------------------------------------------------------------------------------------

function readTokens() {
  const frag = new URLSearchParams(location.hash.slice(1));
  const keys = [["call_token", "vg.callToken"], ["editor_token", "vg.editorToken"], ["viewer_token", "vg.viewerToken"]];
  for (const [key, store] of keys) {
    if (frag.get(key)) localStorage.setItem(store, frag.get(key));
  }
  if (keys.some(([key]) => frag.get(key))) history.replaceState(null, "", location.pathname);
  $("call-token").value = localStorage.getItem("vg.callToken") || "";
  $("editor-token").value = localStorage.getItem("vg.editorToken") || "";
  $("viewer-token").value = localStorage.getItem("vg.viewerToken") || "";
}

function callToken() { return $("call-token").value.trim(); }
function editorToken() { return $("editor-token").value.trim(); }
function auth(token) { return { Authorization: "Bearer " + token }; }

$("save-tokens").addEventListener("click", () => {
  localStorage.setItem("vg.callToken", callToken());
  localStorage.setItem("vg.editorToken", editorToken());
  localStorage.setItem("vg.viewerToken", $("viewer-token").value.trim());
  loadPersonas();
  if (vg.ops) vg.ops.refreshLive();
});

// --- personas list -----------------------------------------------------------------------------

async function loadPersonas(selected) {
  const token = callToken() || editorToken();
  const resp = await fetch("/api/personas", { headers: auth(token) });
  if (!resp.ok) {
    setStatus(resp.status === 401 ? "enter a call token (Access tokens)" : "cannot list personas: " + resp.status);
    return [];
  }
  const { personas } = await resp.json();
  for (const sel of [$("persona"), $("edit-persona")]) {
    const keep = selected || sel.value;
    sel.replaceChildren(...personas.map((p) => {
      const o = document.createElement("option");
      o.value = p.name;
      o.textContent = p.name + (p.broken ? " (edit broken)" : "");
      o.title = p.description;
      return o;
    }));
    if (keep && personas.some((p) => p.name === keep)) sel.value = keep;
  }
  return personas;
}

// --- calls -------------------------------------------------------------------------------------

function setStatus(text) {
  vg.state = text;
  $("call-status").textContent = text;
}

function waitForIce(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function startCall(persona) {
  if (vg.pc) await hangUp();
  vg.events = [];
  vg.transcript = [];
  vg.error = null;
  vg.ended = null;
  $("transcript").replaceChildren();
  $("events").replaceChildren();
  setStatus("starting");
  $("call").disabled = true;
  try {
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const pc = new RTCPeerConnection({ iceServers: [] });
    vg.pc = pc;
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    pc.addEventListener("track", (ev) => {
      const audio = $("remote-audio");
      audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      audio.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      const s = pc.connectionState;
      if (s === "connected") setStatus("in call with " + persona);
      if ((s === "failed" || s === "closed") && vg.pc === pc) endCall("connection " + s);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 3000);
    // subscribe to the call's events before it exists, so that call.started shows too
    const callId = "wr-" + crypto.randomUUID().replaceAll("-", "");
    vg.callId = callId;
    await followEvents(callId);
    const resp = await fetch("/webrtc/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...auth(callToken()) },
      body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp, persona, call_id: callId }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(resp.status + ": " + (body.detail || "refused"));
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    setStatus("connecting");
    $("hangup").disabled = false;
  } catch (err) {
    vg.error = String(err && err.message || err);
    await hangUp();
    setStatus("call failed: " + vg.error);
  }
}

function endCall(why) {
  const pc = vg.pc;
  vg.pc = null;
  if (pc) {
    pc.getSenders().forEach((s) => s.track && s.track.stop());
    vg.lastPc = pc;  // getStats stays readable for a moment after close
    pc.close();
  }
  // the feed stays open until call.ended arrives (the last transcript comes with the end)
  const feed = vg.feed;
  if (feed) setTimeout(() => feed.abort(), 5000);
  $("hangup").disabled = true;
  $("call").disabled = false;
  setStatus("ended" + (why ? " (" + why + ")" : ""));
}

async function hangUp() { endCall("hung up"); }

$("call").addEventListener("click", () => startCall($("persona").value));
$("hangup").addEventListener("click", hangUp);

// --- live events (server-sent events read with fetch, so the token stays in a header) --------

// resolves once subscribed; events then arrive in the background until call.ended
async function followEvents(callId) {
  const ctrl = new AbortController();
  vg.feed = ctrl;
  const resp = await fetch("/api/events?call_id=" + encodeURIComponent(callId), {
    headers: auth(callToken()), signal: ctrl.signal,
  });
  if (!resp.ok) throw new Error("event feed: " + resp.status);
  readEvents(resp, ctrl);
}

async function readEvents(resp, ctrl) {
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
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") console.warn("event feed:", err);
  }
}

function addLine(list, text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function onEvent(ev) {
  vg.events.push(ev);
  const at = (ev.t / 1000).toFixed(2) + " s";
  if (ev.type === "transcript.agent") {
    vg.transcript.push(ev.text);
    addLine($("transcript"), ev.text + (ev.cut_at_ms >= 0 && ev.is_heard === false ? " (not heard)" : ""),
      ev.cut_text ? "cut" : "");
  } else if (ev.type === "bargein") {
    addLine($("events"), at + " barge-in: agent stopped after " + ev.latency_ms + " ms" +
      (ev.cut_text ? ", cut: " + ev.cut_text : ""), "bargein");
  } else if (ev.type === "call.transfer") {
    // a browser call cannot be handed to a phone: the page says so, then the call ends
    addLine($("events"), at + " transfer to " + ev.destination + (ev.to ? " (" + ev.to + ")" : "") +
      ": " + ev.result + (ev.detail ? " (" + ev.detail + ")" : ""), "transfer");
  } else if (ev.type === "call.ended") {
    addLine($("events"), at + " call ended: " + ev.reason + (ev.detail ? " (" + ev.detail + ")" : ""));
    if (ev.call_id === vg.callId) {
      vg.ended = ev;
      if (vg.pc) endCall(ev.reason);
      if (vg.feed) { vg.feed.abort(); vg.feed = null; }
    }
  } else {
    addLine($("events"), at + " " + ev.type);
  }
}

// --- persona editor ----------------------------------------------------------------------------

const editor = { name: null, timer: null, seq: 0, lastOk: false };
vg.editor = editor;

function editName() { return $("new-name").value.trim() || $("edit-persona").value; }

$("open").addEventListener("click", async () => {
  const name = editName();
  const resp = await fetch("/api/personas/" + encodeURIComponent(name), { headers: auth(editorToken()) });
  if (resp.status === 404) {
    $("yaml").value = "description: \nvoice: NATF2\ntext_prompt: >-\n  \n";
  } else if (!resp.ok) {
    $("save-status").textContent = resp.status === 401 ? "enter the editor token" : "cannot open: " + resp.status;
    return;
  } else {
    $("yaml").value = (await resp.json()).yaml;
  }
  editor.name = name;
  $("save").disabled = false;
  $("call-edited").disabled = false;
  $("save-status").textContent = "editing " + name;
  renderGutter([]);
  validateNow();
});

$("yaml").addEventListener("input", () => {
  clearTimeout(editor.timer);
  editor.timer = setTimeout(validateNow, 250);
  renderGutter(editor.problems || []);
});
$("yaml").addEventListener("scroll", () => { $("gutter").scrollTop = $("yaml").scrollTop; });

async function validateNow() {
  if (!editor.name) return null;
  const seq = ++editor.seq;
  const resp = await fetch("/api/personas/" + encodeURIComponent(editor.name) + "/validate", {
    method: "POST", headers: { "Content-Type": "text/plain; charset=utf-8", ...auth(editorToken()) },
    body: $("yaml").value,
  });
  if (seq !== editor.seq || !resp.ok) return null;  // a newer keystroke's check is on its way
  const body = await resp.json();
  showProblems(body.problems, body.ok);
  return body;
}

function showProblems(problems, ok) {
  editor.problems = problems;
  editor.lastOk = ok;
  $("validity").textContent = ok ? (problems.length ? "valid, with warnings" : "valid") : "errors: not savable";
  $("validity").className = ok ? "ok" : "bad";
  $("problems").replaceChildren(...problems.map((p) => {
    const li = document.createElement("li");
    li.className = p.severity;
    li.textContent = p.text;
    li.addEventListener("click", () => gotoLine(p.line, p.col));
    return li;
  }));
  renderGutter(problems);
}

function renderGutter(problems) {
  const n = $("yaml").value.split("\n").length;
  const bad = new Map(problems.map((p) => [p.line, p.severity]));
  const lines = [];
  for (let i = 1; i <= n; i++) lines.push((bad.has(i) ? (bad.get(i) === "error" ? "!" : "?") : " ") + String(i).padStart(3));
  $("gutter").textContent = lines.join("\n");
}

function gotoLine(line, col) {
  const text = $("yaml").value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < text.length; i++) pos += text[i].length + 1;
  $("yaml").focus();
  $("yaml").setSelectionRange(pos + col - 1, pos + col - 1);
}

async function save() {
  if (!editor.name) return false;
  const resp = await fetch("/api/personas/" + encodeURIComponent(editor.name), {
    method: "PUT", headers: { "Content-Type": "text/plain; charset=utf-8", ...auth(editorToken()) },
    body: $("yaml").value,
  });
  const body = await resp.json().catch(() => ({}));
  if (resp.ok) {
    $("save-status").textContent = "saved " + body.file + (body.backup ? " (previous version: " + body.backup + ")" : "") + "; loaded for new calls";
    showProblems(body.problems || [], true);
    await loadPersonas(editor.name);
    return true;
  }
  $("save-status").textContent = "not saved: " + (body.detail || resp.status);
  if (body.problems) showProblems(body.problems, false);
  return false;
}

$("save").addEventListener("click", save);
$("call-edited").addEventListener("click", async () => {
  if (await save()) {
    $("persona").value = editor.name;
    await startCall(editor.name);
  }
});

readTokens();
loadPersonas();
