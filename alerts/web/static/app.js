// fleetpulse page: bulk approve on the queue, transitions on the device page. No framework, no CDN.
"use strict";

// The session's CSRF token: every write sends it, the server refuses a cookie-authenticated write without it.
const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail ? JSON.stringify(data.detail) : `HTTP ${response.status}`);
  return data;
}

function setupQueue() {
  const button = document.getElementById("bulk-approve");
  if (!button) return;
  const status = document.getElementById("bulk-status");
  const picks = () => Array.from(document.querySelectorAll("input.pick"));
  const chosen = () => picks().filter((p) => p.checked).map((p) => Number(p.value));
  const refresh = () => {
    const n = chosen().length;
    button.disabled = n === 0;
    button.textContent = n ? `Approve selected (${n})` : "Approve selected";
  };
  document.getElementById("select-all")?.addEventListener("change", (event) => {
    picks().forEach((p) => { p.checked = event.target.checked; });
    refresh();
  });
  picks().forEach((p) => p.addEventListener("change", refresh));
  button.addEventListener("click", async () => {
    const ids = chosen();
    button.disabled = true;
    status.textContent = `Approving ${ids.length} ticket(s)…`;
    try {
      const updated = await postJson("/api/v1/tickets/bulk-transition", { ticket_ids: ids, to: "approved" });
      for (const t of updated) {
        const row = document.querySelector(`tr[data-ticket="${t.id}"]`);
        if (!row) continue;
        row.querySelector("td.state").textContent = t.state;
        row.className = `state-${t.state}`;
        const pick = row.querySelector("input.pick");
        if (pick) pick.remove();
      }
      status.textContent = `Approved ${updated.length} ticket(s).`;
      status.className = "ok";
    } catch (err) {
      status.textContent = `Not approved: ${err.message}`;
      status.className = "error";
    }
    refresh();
  });
  refresh();
}

function setupDevice() {
  document.querySelectorAll("form.transition").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = form.querySelector(".result");
      const body = { to: form.elements.to.value, note: form.elements.note.value };
      if (form.elements.outcome.value) body.outcome = form.elements.outcome.value;
      try {
        const ticket = await postJson(`/api/v1/tickets/${form.dataset.ticket}/transition`, body);
        result.textContent = `Now ${ticket.state}.`;
        window.setTimeout(() => window.location.reload(), 600);
      } catch (err) {
        result.textContent = `Not changed: ${err.message}`;
      }
    });
  });
}

function setupFailureReport() {
  const form = document.getElementById("failure-report");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = form.querySelector(".result");
    const fields = ["device_id", "component", "component_id", "on_day", "outcome", "note"];
    const body = Object.fromEntries(fields.map((name) => [name, form.elements[name].value]));
    try {
      const saved = await postJson("/api/v1/failure-reports", body);
      result.textContent = `Recorded: ${saved.device_id} ${saved.component} ${saved.outcome} on ${saved.on_day}.`;
      form.reset();
    } catch (err) {
      result.textContent = `Not recorded: ${err.message}`;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupQueue(); setupDevice(); setupFailureReport(); });
