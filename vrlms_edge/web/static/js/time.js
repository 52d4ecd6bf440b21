// Show server times (UTC) in the browser's own zone, and send the zone with schedule forms.
const pad = (n) => String(n).padStart(2, "0");
const localInput = (d) =>
  `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;

for (const el of document.querySelectorAll("time[datetime]")) {
  const d = new Date(el.getAttribute("datetime"));
  if (!Number.isNaN(d.getTime())) {
    el.textContent = d.toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  }
}
for (const input of document.querySelectorAll("input[data-utc]")) {
  const d = new Date(input.dataset.utc);
  if (!Number.isNaN(d.getTime())) input.value = localInput(d);
}
for (const input of document.querySelectorAll("input[data-tz-offset]")) {
  input.value = String(new Date().getTimezoneOffset());
}
