// Staff tables: KYC queue decisions, payout approval, user management. Every action is a JSON
// API call; the API enforces roles, permissions and the 2FA-verified session.
import { api, el, when } from "./api.js";

const table = document.querySelector("[data-staff]");
const body = table.querySelector("tbody");
const errorLine = document.querySelector("[data-form-error]");

function action(label, run, attrs = {}) {
  const button = el("button", { type: "button", class: "tiny", ...attrs }, label);
  button.addEventListener("click", async () => {
    errorLine.textContent = "";
    button.disabled = true;
    try {
      await run();
      await reload();
    } catch (error) {
      errorLine.textContent = error.message;
      button.disabled = false;
    }
  });
  return button;
}

const CASE_ACTIONS = {
  message: ["dismiss", "delete_message", "mute", "escalate"],
  // unhide: a stream the video policy hid, its case still open.
  stream: ["dismiss", "warn", "hide", "unhide", "end_stream", "escalate"],
  user: ["dismiss", "warn", "ban", "suspend", "freeze_payouts", "escalate"],
};

const ROLES = ["viewer", "performer", "moderator", "admin"];
const me = Number(table.dataset.me || 0);

// A role select with its own Save button (admins; the API refuses a change of one's own role,
// so one's own row shows the role without the editor).
function roleEditor(user) {
  if (user.id === me) return el("span", {}, `${user.role} (you)`);
  const select = el(
    "select",
    { class: "role-select", "aria-label": `Role of ${user.display_name}` },
    ...ROLES.map((role) => el("option", { value: role, selected: role === user.role }, role)),
  );
  const save = action(
    "Save",
    async () => {
      const changed = await api("POST", `/api/admin/users/${user.id}/role`, { role: select.value });
      document.querySelector("[data-role-state]").textContent = `${changed.display_name} is now ${changed.role}.`;
    },
    { "aria-label": `Save role of ${user.display_name}` },
  );
  return el("span", { class: "role-edit" }, select, " ", save);
}

const LOADERS = {
  async moderation() {
    const items = await api("GET", "/api/moderation/queue");
    body.replaceChildren(
      ...items.map((c) =>
        el(
          "tr",
          {},
          el("td", {}, String(c.id)),
          el("td", {}, String(c.severity)),
          el("td", {}, `${c.target_type} (${c.source})`),
          el("td", {}, c.stream_id ? el("a", { href: `/rooms/${c.stream_id}` }, `#${c.stream_id}`) : "—"),
          el("td", {}, c.subject_user_id ? `${c.subject_name ?? "?"} (#${c.subject_user_id})` : "—"),
          el("td", {}, c.reason),
          el(
            "td",
            { class: "actions" },
            ...(CASE_ACTIONS[c.target_type] || ["dismiss", "escalate"]).map((name) =>
              action(name.replace("_", " "), () => api("POST", `/api/moderation/cases/${c.id}/actions`, { action: name }), {
                "aria-label": `${name.replace("_", " ")} case ${c.id}`,
              }),
            ),
          ),
        ),
      ),
    );
    if (!items.length) body.append(el("tr", {}, el("td", { colSpan: 7 }, "The queue is empty.")));
  },
  async kyc() {
    const items = await api("GET", "/api/kyc/review/");
    body.replaceChildren(
      ...items.map((s) =>
        el(
          "tr",
          {},
          el("td", {}, String(s.id)),
          el("td", {}, String(s.user_id)),
          el("td", {}, s.country),
          el("td", {}, s.document_type),
          el("td", {}, s.flags.join(", ") || "none"),
          el("td", {}, when(s.submitted_at)),
          el(
            "td",
            { class: "actions" },
            action("Approve", () => api("POST", `/api/kyc/review/${s.id}/decision`, { decision: "approve" }), { "aria-label": `Approve submission ${s.id}` }),
            action("Resubmit", () => api("POST", `/api/kyc/review/${s.id}/decision`, { decision: "needs_resubmission", reason: "please submit clearer images" }), { "aria-label": `Ask submission ${s.id} to resubmit` }),
            action("Reject", () => api("POST", `/api/kyc/review/${s.id}/decision`, { decision: "reject", reason: "rejected by reviewer" }), { "aria-label": `Reject submission ${s.id}` }),
          ),
        ),
      ),
    );
    if (!items.length) body.append(el("tr", {}, el("td", { colSpan: 7 }, "Nothing waiting for review.")));
  },
  async payouts() {
    const items = await api("GET", "/api/admin/payouts/");
    body.replaceChildren(
      ...items.map((p) =>
        el(
          "tr",
          {},
          el("td", {}, String(p.id)),
          el("td", {}, String(p.performer_id)),
          el("td", { class: "num" }, `${p.amount} ${p.currency}`),
          el("td", {}, p.account_holder),
          el("td", {}, p.status),
          el("td", { class: "actions" }, ...(p.status === "requested" && p.batch_id ? [action("Approve", () => api("POST", `/api/admin/payouts/${p.id}/approve`, {}), { "aria-label": `Approve payout ${p.id}` })] : [])),
        ),
      ),
    );
    const batch = action("Batch open requests", () => api("POST", "/api/admin/payouts/batch", {}));
    body.append(el("tr", {}, el("td", { colSpan: 6 }, batch)));
  },
  async users() {
    const items = await api("GET", "/api/admin/users/");
    body.replaceChildren(
      ...items.map((u) =>
        el(
          "tr",
          {},
          el("td", {}, String(u.id)),
          el("td", {}, u.display_name),
          el("td", {}, u.email),
          el("td", {}, roleEditor(u)),
          el("td", {}, u.totp_enabled ? "on" : "off"),
          el("td", {}, u.disabled ? "disabled" : "active"),
          el(
            "td",
            { class: "actions" },
            u.disabled
              ? action("Enable", () => api("POST", `/api/admin/users/${u.id}/enable`, {}), { "aria-label": `Enable ${u.display_name}` })
              : action("Disable", () => api("POST", `/api/admin/users/${u.id}/disable`, { reason: "disabled from the staff pages" }), { "aria-label": `Disable ${u.display_name}` }),
          ),
        ),
      ),
    );
  },
};

// On a phone the rows are stacked as cards (app.css): each cell names its column.
function labelCells() {
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of body.rows) {
    if (row.cells.length !== names.length) continue; // "the queue is empty" and other notes
    [...row.cells].forEach((cell, i) => cell.setAttribute("data-label", names[i]));
  }
}

async function reload() {
  await LOADERS[table.dataset.staff]();
  labelCells();
}

reload().catch((e) => (errorLine.textContent = e.message));
