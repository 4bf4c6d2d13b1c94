// owl's page: chat with images, dictation, a voice conversation, file
// transcription and the models, over owl serve's own APIs (the same ones
// every client uses). Everything is local: no script, font or request
// leaves the server's origin.
import { render } from "./md.js";

const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem("owl.key") || "",
  models: [],
  chats: loadChats(),
  current: null,
  attachments: [],
  busy: null, // the chat request under way: its AbortController
};

// ---- API ----------------------------------------------------------------

let keyPrompt = null;

// api fetches path with the API key; a 401 asks for the key and tries again.
async function api(path, opts = {}) {
  for (;;) {
    const headers = new Headers(opts.headers || {});
    if (state.key) headers.set("Authorization", "Bearer " + state.key);
    const res = await fetch(path, { ...opts, headers });
    if (res.status === 401) {
      await askKey(state.key ? "That key was refused: try another." : "");
      continue;
    }
    if (!res.ok) throw new Error(await errorText(res));
    return res;
  }
}

async function errorText(res) {
  const text = await res.text();
  try {
    const j = JSON.parse(text);
    const e = j.error;
    if (typeof e === "string") return e;
    if (e && e.message) return e.message;
  } catch {}
  return `${res.status} ${res.statusText}${text ? ": " + text.slice(0, 200) : ""}`;
}

function askKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  const p = dialog.querySelector("p");
  if (message) p.textContent = message;
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      state.key = $("key-input").value.trim();
      localStorage.setItem("owl.key", state.key);
      keyPrompt = null;
      resolve();
    }, { once: true });
  });
  dialog.showModal();
  $("key-input").focus();
  return keyPrompt;
}

// wsURL is a WebSocket address on this server.
function wsURL(path, query) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== "") u.searchParams.set(k, v);
  return u.toString();
}

function notify(message) {
  const n = $("notice");
  n.textContent = message;
  n.hidden = !message;
}

function fail(err) {
  if (err && err.name === "AbortError") return;
  notify(String(err && err.message ? err.message : err));
}

// ---- Views --------------------------------------------------------------

const views = ["chat", "talk", "transcribe", "models"];

function show(view) {
  if (!views.includes(view)) view = "chat";
  for (const v of views) {
    $("tab-" + v).setAttribute("aria-selected", String(v === view));
    $("tab-" + v).tabIndex = v === view ? 0 : -1;
    $("view-" + v).hidden = v !== view;
  }
  if (view === "models") refreshModels().catch(fail);
  if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
}

function setupTabs() {
  views.forEach((v, i) => {
    const tab = $("tab-" + v);
    tab.addEventListener("click", () => show(v));
    tab.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      const next = views[(i + step + views.length) % views.length];
      show(next);
      $("tab-" + next).focus();
    });
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1));
}

// ---- Models -------------------------------------------------------------

async function loadModels() {
  const res = await api("/v1/models");
  state.models = (await res.json()).data || [];
  const fill = (id, kinds, extra = []) => {
    const sel = $(id);
    const keep = sel.value || localStorage.getItem("owl." + id) || "";
    sel.replaceChildren();
    for (const [value, label] of extra) sel.append(new Option(label, value));
    for (const m of state.models.filter((m) => kinds.includes(m.kind))) sel.append(new Option(m.id, m.id));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    sel.onchange = () => localStorage.setItem("owl." + id, sel.value);
  };
  fill("chat-model", ["llm"]);
  fill("talk-model", ["llm"]);
  fill("dictate-model", ["whisper"]);
  fill("transcribe-model", ["whisper"]);
  fill("talk-whisper", ["whisper"]);
  const voices = state.models.filter((m) => m.kind === "voice" && m.id !== "espeak").map((m) => [m.id, m.id]);
  fill("talk-voice", [], [...voices, ...["alloy", "echo", "sage", "shimmer", "verse"].map((v) => [v, v + " (espeak-ng)"])]);
}

function formatBytes(n) {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function actionButton(label, title, onClick, cls = "secondary") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  b.setAttribute("aria-label", title);
  b.addEventListener("click", () => onClick(b));
  return b;
}

function cells(tr, ...values) {
  for (const v of values) {
    const td = document.createElement("td");
    if (v instanceof Node) td.append(v); else td.textContent = v;
    tr.append(td);
  }
}

// kindOf is a model's kind as /v1/models says it (llm, whisper, voice, ...).
function kindOf(name, details) {
  const m = state.models.find((x) => x.id === name);
  return (m && m.kind) || (details && details.family) || "";
}

async function refreshModels() {
  const [tags, ps] = await Promise.all([api("/api/tags").then((r) => r.json()), api("/api/ps").then((r) => r.json())]);
  const installed = $("models-installed").tBodies[0];
  installed.replaceChildren();
  for (const m of tags.models || []) {
    const tr = document.createElement("tr");
    tr.dataset.model = m.name;
    cells(tr, m.name, kindOf(m.name, m.details), formatBytes(m.size),
      actionButton("Remove", "Remove " + m.name, async (b) => {
        if (!confirm(`Remove ${m.name} from the models folder?`)) return;
        b.disabled = true;
        try {
          await api("/api/delete", { method: "DELETE", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: m.name }) });
          await Promise.all([refreshModels(), loadModels()]);
        } catch (e) { fail(e); b.disabled = false; }
      }, "danger"));
    installed.append(tr);
  }
  const loaded = $("models-loaded").tBodies[0];
  loaded.replaceChildren();
  for (const m of ps.models || []) {
    const tr = document.createElement("tr");
    tr.dataset.model = m.name;
    const expires = m.expires_at && new Date(m.expires_at);
    const when = !expires || expires.getFullYear() > 9000 ? "never" : expires.toLocaleTimeString();
    const kind = kindOf(m.name, m.details);
    const unload = kind === "llm" ? actionButton("Unload", "Unload " + m.name, async (b) => {
      b.disabled = true;
      try {
        await api("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: m.name, keep_alive: 0 }) });
        await refreshModels();
      } catch (e) { fail(e); b.disabled = false; }
    }) : "";
    cells(tr, m.name, kind, formatBytes(m.size), when, unload);
    loaded.append(tr);
  }
  if (!(ps.models || []).length) {
    const tr = document.createElement("tr");
    cells(tr, "No model is loaded: they load on first use.", "", "", "", "");
    loaded.append(tr);
  }
}

async function pull(e) {
  e.preventDefault();
  const name = $("pull-name").value.trim();
  if (!name) return;
  notify("");
  $("pull-go").disabled = true;
  $("pull-progress").hidden = false;
  const bar = $("pull-bar"), status = $("pull-status");
  bar.value = 0;
  status.textContent = "Starting…";
  try {
    const res = await api("/api/pull", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: name, stream: true }) });
    for await (const line of lines(res.body)) {
      if (!line.trim()) continue;
      const p = JSON.parse(line);
      if (p.error) throw new Error(p.error);
      if (p.total > 0) {
        bar.max = p.total;
        bar.value = p.completed || 0;
        status.textContent = `${p.status}: ${formatBytes(p.completed || 0)} of ${formatBytes(p.total)}`;
      } else {
        status.textContent = p.status;
      }
      if (p.status === "success") {
        bar.max = 1;
        bar.value = 1;
        status.textContent = `${name}: installed`;
      }
    }
    await Promise.all([refreshModels(), loadModels()]);
  } catch (err) {
    status.textContent = "Failed";
    fail(err);
  } finally {
    $("pull-go").disabled = false;
  }
}

// lines yields a response body's lines as they arrive.
async function* lines(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

// ---- Chat ---------------------------------------------------------------

function loadChats() {
  try { return JSON.parse(localStorage.getItem("owl.chats") || "[]"); } catch { return []; }
}

function saveChats() {
  try {
    localStorage.setItem("owl.chats", JSON.stringify(state.chats));
  } catch {
    // Over the browser's quota: keep the texts, drop the images.
    const slim = state.chats.map((c) => ({ ...c, messages: c.messages.map((m) => ({ ...m, images: [] })) }));
    try { localStorage.setItem("owl.chats", JSON.stringify(slim)); } catch {}
  }
}

function currentChat() {
  if (!state.current) newChat();
  return state.chats.find((c) => c.id === state.current);
}

function newChat() {
  const chat = { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "New chat", messages: [] };
  state.chats.unshift(chat);
  state.current = chat.id;
  saveChats();
  drawChats();
  drawThread();
}

function drawChats() {
  const list = $("chat-list");
  list.replaceChildren();
  for (const c of state.chats) {
    const li = document.createElement("li");
    if (c.id === state.current) li.className = "current";
    const open = actionButton(c.title, "Open chat " + c.title, () => { state.current = c.id; drawChats(); drawThread(); }, "open");
    open.textContent = c.title;
    if (c.id === state.current) open.setAttribute("aria-current", "true");
    const del = actionButton("×", "Delete chat " + c.title, () => {
      state.chats = state.chats.filter((x) => x.id !== c.id);
      if (state.current === c.id) state.current = state.chats[0] ? state.chats[0].id : null;
      saveChats();
      drawChats();
      drawThread();
    }, "delete");
    li.append(open, del);
    list.append(li);
  }
}

function messageElement(m) {
  const li = document.createElement("li");
  li.className = "message " + m.role;
  for (const src of m.images || []) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = "Attached image";
    li.append(img);
  }
  if (m.thinking) {
    const d = document.createElement("details");
    d.className = "thinking";
    const s = document.createElement("summary");
    s.textContent = "Reasoning";
    const t = document.createElement("div");
    t.textContent = m.thinking;
    d.append(s, t);
    li.append(d);
  }
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "assistant") body.append(render(m.content)); else body.textContent = m.content;
  li.append(body);
  if (m.usage) {
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${m.usage.prompt_tokens} prompt tokens · ${m.usage.completion_tokens} generated`;
    li.dataset.promptTokens = m.usage.prompt_tokens;
    li.append(meta);
  }
  return li;
}

function drawThread() {
  const thread = $("thread");
  thread.replaceChildren();
  const chat = state.current && state.chats.find((c) => c.id === state.current);
  if (!chat) return;
  for (const m of chat.messages) thread.append(messageElement(m));
  thread.scrollTop = thread.scrollHeight;
}

function drawAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attachments.forEach((src, i) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src;
    img.alt = `Image ${i + 1} to send`;
    fig.append(img, actionButton("×", `Remove image ${i + 1}`, () => { state.attachments.splice(i, 1); drawAttachments(); }));
    box.append(fig);
  });
}

function attachFiles(files) {
  for (const f of files) {
    if (!f.type.startsWith("image/")) continue;
    const r = new FileReader();
    r.onload = () => { state.attachments.push(r.result); drawAttachments(); };
    r.readAsDataURL(f);
  }
}

async function send(e) {
  e.preventDefault();
  if (state.busy) return;
  const text = $("message").value.trim();
  if (!text && state.attachments.length === 0) return;
  const model = $("chat-model").value;
  if (!model) { notify("No text model: pull one in Models."); return; }
  notify("");
  stopDictation();
  const chat = currentChat();
  const user = { role: "user", content: text, images: state.attachments.slice() };
  chat.messages.push(user);
  if (chat.title === "New chat") chat.title = (text || "Image").slice(0, 40);
  state.attachments = [];
  drawAttachments();
  $("message").value = "";
  drawChats();
  drawThread();

  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of chat.messages) {
    if (m.images && m.images.length) {
      messages.push({ role: m.role, content: [{ type: "text", text: m.content }, ...m.images.map((url) => ({ type: "image_url", image_url: { url } }))] });
    } else {
      messages.push({ role: m.role, content: m.content });
    }
  }
  const answer = { role: "assistant", content: "" };
  const li = messageElement(answer);
  $("thread").append(li);
  const body = li.querySelector(".body");
  const ctrl = new AbortController();
  state.busy = ctrl;
  $("send").hidden = true;
  $("stop").hidden = false;
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      body.replaceChildren(render(answer.content));
      $("thread").scrollTop = $("thread").scrollHeight;
    });
  };
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST", signal: ctrl.signal, headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($("chat-temperature").value), max_tokens: Number($("chat-max-tokens").value) }),
    });
    for await (const line of lines(res.body)) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || chunk.error);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { answer.content += delta.content; redraw(); }
      if (delta && delta.reasoning_content) { answer.thinking = (answer.thinking || "") + delta.reasoning_content; }
      if (chunk.usage) answer.usage = chunk.usage;
    }
  } catch (err) {
    if (err.name !== "AbortError") {
      li.classList.add("error");
      fail(err);
    }
  } finally {
    state.busy = null;
    $("send").hidden = false;
    $("stop").hidden = true;
    chat.messages.push(answer);
    saveChats();
    li.replaceWith(messageElement(answer));
    $("thread").scrollTop = $("thread").scrollHeight;
  }
}

function setupChat() {
  $("composer").addEventListener("submit", send);
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.busy && state.busy.abort());
  $("new-chat").addEventListener("click", newChat);
  $("image-picker").addEventListener("change", (e) => { attachFiles(e.target.files); e.target.value = ""; });
  const composer = $("composer");
  for (const el of [composer, $("thread")]) {
    el.addEventListener("dragover", (e) => { e.preventDefault(); composer.classList.add("dragging"); });
    el.addEventListener("dragleave", () => composer.classList.remove("dragging"));
    el.addEventListener("drop", (e) => { e.preventDefault(); composer.classList.remove("dragging"); attachFiles(e.dataTransfer.files); });
  }
  $("message").addEventListener("paste", (e) => { if (e.clipboardData.files.length) attachFiles(e.clipboardData.files); });
  $("camera").addEventListener("click", openCamera);
  $("snap").addEventListener("click", snapshot);
  $("camera-close").addEventListener("click", closeCamera);
  $("dictate").addEventListener("click", () => (dictation ? stopDictation() : startDictation().catch((e) => { fail(e); stopDictation(); })));
  state.current = state.chats[0] ? state.chats[0].id : null;
  drawChats();
  drawThread();
}

let camera = null;

async function openCamera() {
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: true });
    $("camera-video").srcObject = camera;
    $("camera-panel").hidden = false;
  } catch (e) { fail(new Error("The camera cannot be opened: " + e.message)); }
}

function snapshot() {
  const v = $("camera-video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  state.attachments.push(c.toDataURL("image/jpeg", 0.9));
  drawAttachments();
  closeCamera();
}

function closeCamera() {
  if (camera) camera.getTracks().forEach((t) => t.stop());
  camera = null;
  $("camera-panel").hidden = true;
}

// ---- Microphone ---------------------------------------------------------

// openMic streams the microphone's samples (Float32Array, mono, at rate or
// the device's) to onSamples; it returns the context and a stop function.
async function openMic(onSamples, rate) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
  const ctx = new AudioContext(rate ? { sampleRate: rate } : {});
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(2048, 1, 1);
  proc.onaudioprocess = (e) => onSamples(new Float32Array(e.inputBuffer.getChannelData(0)));
  const sink = ctx.createGain();
  sink.gain.value = 0; // the processor runs only when connected to the output
  src.connect(proc);
  proc.connect(sink);
  sink.connect(ctx.destination);
  return {
    ctx,
    stop() {
      proc.onaudioprocess = null;
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
    },
  };
}

// ---- Dictation ----------------------------------------------------------

let dictation = null;

async function startDictation() {
  const model = $("dictate-model").value;
  if (!model) throw new Error("No speech model: pull one in Models (whisper:base.en).");
  notify("");
  const box = $("message");
  const d = { base: box.value, finals: [], ws: null, mic: null };
  dictation = d;
  $("dictate").setAttribute("aria-pressed", "true");
  d.mic = await openMic((samples) => { if (d.ws && d.ws.readyState === WebSocket.OPEN) d.ws.send(samples.buffer); });
  d.ws = new WebSocket(wsURL("/v1/audio/stream", { model, encoding: "pcm_f32le", sample_rate: d.mic.ctx.sampleRate, api_key: state.key }));
  const write = (partial) => {
    const said = [...d.finals, partial].filter(Boolean).join(" ");
    box.value = [d.base, said].filter(Boolean).join(d.base && !d.base.endsWith(" ") ? " " : "");
    box.classList.toggle("interim", Boolean(partial));
  };
  d.ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "partial") write(ev.text);
    else if (ev.type === "final") { d.finals.push(ev.text); write(""); }
    else if (ev.type === "error") { fail(new Error(ev.error.message)); stopDictation(); }
  };
  d.ws.onclose = (e) => {
    if (dictation === d && e.code !== 1000) { fail(new Error("Dictation stopped: " + (e.reason || "the connection closed"))); stopDictation(); }
  };
}

function stopDictation() {
  const d = dictation;
  if (!d) return;
  dictation = null;
  $("dictate").setAttribute("aria-pressed", "false");
  $("message").classList.remove("interim");
  if (d.mic) d.mic.stop();
  if (d.ws && d.ws.readyState === WebSocket.OPEN) d.ws.send(JSON.stringify({ type: "end" }));
  // The final text of what was said last still comes; then the server closes.
  if (d.ws) d.ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "final") {
      d.finals.push(ev.text);
      const box = $("message");
      box.value = [box.value, ev.text].filter(Boolean).join(" ");
    }
  };
}

// ---- Talk (the Realtime API) --------------------------------------------

let talk = null;

function pcm16Base64(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  samples.forEach((v, i) => view.setInt16(2 * i, Math.max(-1, Math.min(1, v)) * 32767, true));
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function base64PCM16(b64) {
  const bin = atob(b64);
  const out = new Float32Array(bin.length >> 1);
  for (let i = 0; i < out.length; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 32768;
  }
  return out;
}

function talkLine(role, text) {
  const li = document.createElement("li");
  li.className = "message " + role;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  li.append(body);
  $("talk-log").append(li);
  $("talk-log").scrollTop = $("talk-log").scrollHeight;
  return li;
}

async function startTalk() {
  const model = $("talk-model").value;
  const whisper = $("talk-whisper").value;
  if (!model || !whisper) { notify("Talking needs a text model and a speech model: pull them in Models."); return; }
  notify("");
  const t = { ws: null, mic: null, playing: [], next: 0, answer: null, audioMs: 0 };
  talk = t;
  $("talk-start").hidden = true;
  $("talk-stop").hidden = false;
  $("talk-state").textContent = "Connecting…";
  const protocols = ["realtime"];
  if (state.key) protocols.push("openai-insecure-api-key." + state.key);
  t.ws = new WebSocket(wsURL("/v1/realtime", { model }), protocols);
  t.ws.onopen = async () => {
    t.ws.send(JSON.stringify({ type: "session.update", session: { type: "realtime", instructions: $("talk-instructions").value,
      audio: { input: { format: { type: "audio/pcm", rate: 24000 }, transcription: { model: whisper } },
        output: { format: { type: "audio/pcm", rate: 24000 }, voice: $("talk-voice").value } } } }));
    try {
      t.mic = await openMic((samples) => {
        if (t.ws.readyState === WebSocket.OPEN) t.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: pcm16Base64(samples) }));
      }, 24000);
      $("talk-state").textContent = "Listening — speak";
    } catch (e) { fail(new Error("The microphone cannot be opened: " + e.message)); stopTalk(); }
  };
  t.ws.onmessage = (m) => onTalkEvent(t, JSON.parse(m.data));
  t.ws.onclose = (e) => {
    if (talk === t) {
      if (e.code !== 1000 && e.code !== 1005) fail(new Error("The voice conversation ended: " + (e.reason || "the connection closed")));
      stopTalk();
    }
  };
}

function onTalkEvent(t, ev) {
  switch (ev.type) {
    case "input_audio_buffer.speech_started":
      // Barge-in: the answer playing stops now.
      for (const s of t.playing) { try { s.stop(); } catch {} }
      t.playing = [];
      t.next = 0;
      $("talk-state").textContent = "Hearing you…";
      break;
    case "conversation.item.input_audio_transcription.completed":
      if (ev.transcript) talkLine("user", ev.transcript);
      break;
    case "response.created":
      t.answer = talkLine("assistant", "");
      t.answer.dataset.audioMs = "0";
      $("talk-state").textContent = "Answering…";
      break;
    case "response.output_audio_transcript.delta":
      if (t.answer) t.answer.querySelector(".body").textContent += ev.delta;
      break;
    case "response.output_audio.delta": {
      const samples = base64PCM16(ev.delta);
      const ctx = t.mic && t.mic.ctx;
      if (!ctx || !samples.length) break;
      const buf = ctx.createBuffer(1, samples.length, 24000);
      buf.copyToChannel(samples, 0);
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(ctx.destination);
      t.next = Math.max(t.next, ctx.currentTime + 0.05);
      src.start(t.next);
      t.next += buf.duration;
      t.playing.push(src);
      src.onended = () => { t.playing = t.playing.filter((x) => x !== src); };
      t.audioMs += buf.duration * 1000;
      if (t.answer) t.answer.dataset.audioMs = String(Math.round(t.audioMs));
      break;
    }
    case "response.done":
      if (t.answer && ev.response.status === "cancelled") t.answer.classList.add("cut");
      t.answer = null;
      $("talk-state").textContent = "Listening — speak";
      break;
    case "error":
      fail(new Error(ev.error.message));
      break;
  }
}

function stopTalk() {
  const t = talk;
  if (!t) return;
  talk = null;
  if (t.mic) t.mic.stop();
  if (t.ws && t.ws.readyState <= WebSocket.OPEN) t.ws.close(1000);
  $("talk-start").hidden = false;
  $("talk-stop").hidden = true;
  $("talk-state").textContent = "Not connected";
}

// ---- Transcribe ---------------------------------------------------------

const transcription = { file: null, model: "", language: "" };

function transcribeForm(format) {
  const form = new FormData();
  form.append("file", transcription.file);
  form.append("model", transcription.model);
  form.append("response_format", format);
  if (transcription.language) form.append("language", transcription.language);
  return form;
}

function clock(sec) {
  const m = Math.floor(sec / 60), s = sec - 60 * m;
  return `${m}:${s.toFixed(2).padStart(5, "0")}`;
}

async function transcribe(e) {
  e.preventDefault();
  const file = $("transcribe-file").files[0];
  if (!file) { notify("Choose an audio file first."); return; }
  if (!$("transcribe-model").value) { notify("No speech model: pull one in Models (whisper:base.en)."); return; }
  notify("");
  Object.assign(transcription, { file, model: $("transcribe-model").value, language: $("transcribe-language").value.trim() });
  const state = $("transcribe-state");
  state.textContent = `Transcribing ${file.name}…`;
  $("transcribe-go").disabled = true;
  $("segments").hidden = true;
  $("transcribe-downloads").hidden = true;
  const t0 = performance.now();
  try {
    const res = await api("/v1/audio/transcriptions", { method: "POST", body: transcribeForm("verbose_json") });
    const tr = await res.json();
    const body = $("segments").tBodies[0];
    body.replaceChildren();
    for (const s of tr.segments || []) {
      const tr = document.createElement("tr");
      cells(tr, clock(s.start), clock(s.end), s.text.trim());
      body.append(tr);
    }
    $("segments").hidden = false;
    $("transcribe-downloads").hidden = false;
    state.textContent = `${file.name}: ${(tr.duration || 0).toFixed(1)} s of ${tr.language || "audio"} in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  } catch (err) {
    state.textContent = "";
    fail(err);
  } finally {
    $("transcribe-go").disabled = false;
  }
}

async function download(format) {
  try {
    const res = await api("/v1/audio/transcriptions", { method: "POST", body: transcribeForm(format) });
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = transcription.file.name.replace(/\.[^.]*$/, "") + "." + (format === "text" ? "txt" : format);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) { fail(err); }
}

// ---- Start --------------------------------------------------------------

function start() {
  setupTabs();
  setupChat();
  $("pull-form").addEventListener("submit", pull);
  $("transcribe-form").addEventListener("submit", transcribe);
  for (const b of $("transcribe-downloads").querySelectorAll("button")) b.addEventListener("click", () => download(b.dataset.format));
  $("talk-start").addEventListener("click", () => startTalk().catch(fail));
  $("talk-stop").addEventListener("click", stopTalk);
  loadModels().then(() => document.body.dataset.ready = "true").catch(fail);
}

start();
