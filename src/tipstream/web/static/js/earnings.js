// Performer earnings and payout requests.
import { api, clearErrors, el, newKey, showProblem, when } from "./api.js";

const list = document.querySelector("[data-earnings]");
const payouts = document.querySelector("[data-payouts]");
const form = document.querySelector("[data-payout-form]");
let pendingKey = null;

async function load() {
  const e = await api("GET", "/api/payouts/earnings");
  const rows = [
    ["Balance", e.balance],
    ["In hold period", e.in_hold_period],
    ["Held for payouts", e.held_for_payouts],
    ["Payable now", e.payable],
  ];
  list.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, `${v} ${e.currency}`)]));
  const mine = await api("GET", "/api/payouts/");
  payouts.replaceChildren(
    ...mine.map((p) => el("tr", {}, el("td", {}, when(p.requested_at)), el("td", { class: "num" }, `${p.amount} ${p.currency}`), el("td", {}, p.status))),
  );
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const body = {};
  for (const input of form.querySelectorAll("input")) if (input.value) body[input.name] = input.value.trim();
  pendingKey = pendingKey || newKey();
  try {
    await api("POST", "/api/payouts/", body, { idempotencyKey: pendingKey });
    pendingKey = null;
    form.reset();
    await load();
  } catch (error) {
    if (error.status && error.status < 500) pendingKey = null;
    showProblem(form, error);
  }
});

load().catch((e) => (form.querySelector("[data-form-error]").textContent = e.message));
