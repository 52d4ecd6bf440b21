// Class page: online/offline of every enrolled student, live from the teacher WebSocket.
import { connectTeacher } from "./live.js";

const table = document.getElementById("presence");
const note = document.querySelector("[data-live-note]");
if (table) {
  const classId = table.dataset.classId;
  connectTeacher({
    onStatus: (s) => { if (note) note.textContent = s === "live" ? "Live: presence updates by itself." : "Reconnecting…"; },
    onMessage: (msg) => {
      if (msg.type !== "class" || msg.class_id !== classId) return;
      for (const s of msg.students) {
        const badge = table.querySelector(`tr[data-user-id="${CSS.escape(s.user_id)}"] [data-presence]`);
        if (!badge) continue;
        badge.textContent = s.online ? "online" : "offline";
        badge.className = `badge ${s.online ? "online" : "offline"}`;
      }
    },
  });
}
