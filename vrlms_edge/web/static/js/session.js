// Session page: the control bar (REST commands) and the live grid of student tiles (WebSocket
// `state` and `class` messages). Tiles are built once and then only their fields change.
import { connectTeacher, postApi } from "./live.js";

const root = document.getElementById("session");
const sessionId = root.dataset.sessionId;
const classId = root.dataset.classId;
let state = JSON.parse(document.getElementById("initial-state").textContent);
const students = JSON.parse(document.getElementById("students").textContent);
const tilesEl = document.getElementById("tiles");
const errorEl = document.getElementById("control-error");
const stateLine = document.getElementById("state-line");
const lessonSelect = document.getElementById("lesson-select");
const attentionButton = document.getElementById("attention-button");
const tiles = new Map();
let picture = null;
let serverOffsetMs = 0; // server_ms - Date.now(), from welcome

const fmt = (ms) => {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};
const positionNow = () => {
  if (state.status !== "playing") return state.anchor_position_ms;
  const now = Date.now() + serverOffsetMs;
  return state.anchor_position_ms + Math.max(0, now - state.anchor_server_ms);
};

function renderState() {
  const lesson = state.lesson ? state.lesson.title : "no lesson";
  stateLine.textContent = `${state.status} · ${lesson} · ${fmt(positionNow())} · rev ${state.rev}`;
  stateLine.dataset.status = state.status;
  stateLine.dataset.rev = String(state.rev);
  const on = !!state.attention?.on;
  attentionButton.textContent = on ? "Release attention" : "Eyes on me";
  attentionButton.setAttribute("aria-pressed", String(on));
  if (state.lesson && lessonSelect.value !== state.lesson.id) lessonSelect.value = state.lesson.id;
  for (const b of root.querySelectorAll("button[data-action]")) {
    const a = b.dataset.action;
    b.disabled = (a === "play" && state.status === "playing") || (a === "pause" && state.status !== "playing")
      || (a === "stop" && !["playing", "paused"].includes(state.status)) || (a === "seek" && !["playing", "paused"].includes(state.status))
      || (["play", "launch"].includes(a) && !lessonSelect.options.length);
  }
  renderTiles();
}

function tileFor(student) {
  let t = tiles.get(student.id);
  if (t) return t;
  const el = document.createElement("article");
  el.className = "tile";
  el.dataset.userId = student.id;
  el.innerHTML = `<h3><span data-f="name"></span><span class="badge offline" data-f="presence">offline</span></h3>
    <img class="thumb" data-f="thumb" alt="" hidden>
    <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" data-f="bar"><span></span></div>
    <dl><dt>Battery</dt><dd data-f="battery">—</dd><dt>App</dt><dd data-f="app">—</dd>
    <dt>Applied</dt><dd data-f="applied">—</dd><dt>Looking at</dt><dd data-f="gaze">—</dd></dl>
    <div class="alerts" data-f="alerts"></div>`;
  el.querySelector('[data-f="name"]').textContent = student.display_name;
  el.querySelector('[data-f="thumb"]').alt = `view of ${student.display_name}`;
  tilesEl.append(el);
  t = { el, frame: null, f: (k) => el.querySelector(`[data-f="${k}"]`) };
  tiles.set(student.id, t);
  return t;
}

function renderTiles() {
  const byId = new Map((picture?.students ?? []).map((s) => [s.user_id, s]));
  let online = 0;
  for (const student of students) {
    const t = tileFor(student);
    const s = byId.get(student.id) ?? {};
    const status = s.status ?? {};
    if (s.online) online++;
    const presence = t.f("presence");
    presence.textContent = s.online ? "online" : "offline";
    presence.className = `badge ${s.online ? "online" : "offline"}`;
    t.el.classList.toggle("online", !!s.online);
    t.f("battery").textContent = status.battery != null ? `${Math.round(status.battery * 100)} %` : "—";
    t.f("app").textContent = status.app ?? "—";
    t.f("applied").textContent = s.applied_rev != null
      ? `rev ${s.applied_rev}${s.skew_ms != null ? ` · skew ${s.skew_ms} ms` : ""}` : "—";
    t.el.dataset.appliedRev = s.applied_rev ?? "";
    const progress = Math.round(100 * (s.progress ?? 0));
    t.f("bar").firstElementChild.style.width = `${progress}%`;
    t.f("bar").setAttribute("aria-valuenow", String(progress));
    t.el.dataset.progress = String(progress);
    t.f("gaze").textContent = s.target ?? status.view?.target ?? "—";
    const frame = s.frame_rev || s.frame_ms || 0;
    if (s.device && frame && frame !== t.frame) {
      t.frame = frame;
      const img = t.f("thumb");
      img.src = `/api/devices/${encodeURIComponent(s.device)}/frame.jpg?v=${frame}`;
      img.hidden = false;
    }
    const alerts = [];
    // Offline is an alert once a headset that was here drops off (the badge says the rest).
    if (s.online) t.seen = true;
    if (!s.online && t.seen) alerts.push("went offline");
    if (s.online && state.status !== "idle" && s.applied_rev != null && s.applied_rev < state.rev) alerts.push("lagging");
    if (s.online && state.status === "playing" && state.lesson && status.app && status.app !== state.lesson.apk_package) alerts.push("wrong app");
    t.f("alerts").textContent = alerts.join(" · ");
    t.el.classList.toggle("alerting", alerts.length > 0);
  }
  document.getElementById("no-headsets").hidden = online > 0 || !picture;
}

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = !message;
}

function parseClock(text) {
  const m = /^\s*(?:(\d+):)?(\d{1,2})\s*$/.exec(text);
  return m ? ((Number(m[1] ?? 0) * 60) + Number(m[2])) * 1000 : null;
}

async function command(action) {
  const body = { session_id: sessionId };
  if (action === "launch" || (action === "play" && lessonSelect.value && state.lesson?.id !== lessonSelect.value)) {
    body.lesson_id = lessonSelect.value;
  }
  if (action === "seek") {
    const ms = parseClock(document.getElementById("seek-to").value);
    if (ms == null) return showError("Type a position like 2:30 to seek.");
    body.position_ms = ms;
  }
  if (action === "attention") {
    body.on = !state.attention?.on;
    body.message = document.getElementById("attention-message").value || null;
  }
  const path = { play: "start" }[action] ?? action;
  try {
    const answer = await postApi(`/api/session/${path}/`, body);
    showError("");
    const next = answer.state ?? answer;
    if (next.rev >= state.rev) { state = next; renderState(); }
  } catch (err) {
    showError(err.message);
  }
}

for (const b of root.querySelectorAll("button[data-action]")) {
  b.addEventListener("click", () => command(b.dataset.action));
}

connectTeacher({
  onStatus: (s) => {
    document.getElementById("live-note").textContent =
      s === "live" ? "Live: tiles update by themselves." : s === "logged-out" ? "Logged out: reload the page." : "Reconnecting…";
  },
  onMessage: (msg) => {
    if (msg.type === "welcome" && typeof msg.server_ms === "number") serverOffsetMs = msg.server_ms - Date.now();
    if (msg.type === "state" && msg.session_id === sessionId && msg.rev >= state.rev) { state = msg; renderState(); }
    if (msg.type === "class" && msg.class_id === classId) { picture = msg; renderTiles(); }
  },
});
renderState();
setInterval(() => { if (state.status === "playing") renderState(); }, 500);
