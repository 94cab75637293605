// kmsd dashboard: every button calls the admin API (the same endpoints kmsctl
// uses, the same role checks and audit records), then reloads the page.
"use strict";

async function act(url, body) {
  const msg = document.getElementById("msg");
  msg.className = "";
  msg.textContent = "…";
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  if (r.ok) {
    location.reload();
    return;
  }
  let text = r.status + " " + r.statusText;
  try {
    const e = await r.json();
    text = e.message || text;
  } catch (_) { /* not JSON */ }
  msg.className = "bad";
  msg.textContent = text;
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-url]");
  if (b) {
    ev.preventDefault();
    act(b.dataset.url);
  }
});

document.addEventListener("submit", (ev) => {
  const f = ev.target.closest("form.act");
  if (f) {
    ev.preventDefault();
    act(f.dataset.url, Object.fromEntries(new FormData(f)));
  }
});
