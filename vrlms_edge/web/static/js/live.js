// The dashboard's WebSocket: the same /websocket/ the headsets use, authenticated by the
// session cookie. Reconnects with back-off and jitter; hands every message to `onMessage`.
export function connectTeacher({ onMessage, onStatus }) {
  let delay = 500;
  let socket = null;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/websocket/`;
  const open = () => {
    socket = new WebSocket(url);
    socket.addEventListener("open", () => { delay = 500; onStatus?.("live"); });
    socket.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      onMessage(msg);
    });
    socket.addEventListener("close", (ev) => {
      onStatus?.(ev.code === 4401 ? "logged-out" : "reconnecting");
      if (ev.code === 4401) return;
      const wait = delay * (0.75 + Math.random() / 2);
      delay = Math.min(delay * 2, 10_000);
      setTimeout(open, wait);
    });
  };
  open();
  return { send: (msg) => socket?.readyState === 1 && socket.send(JSON.stringify(msg)) };
}

export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content ?? "";
}

// POST JSON to the API with the CSRF header; resolves to the JSON answer or throws its error.
export async function postApi(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data?.error?.message ?? `request failed (${res.status})`);
  return data;
}
