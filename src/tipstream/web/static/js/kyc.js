// Performer verification: status, and the multipart submission with field errors.
import { api, clearErrors, showProblem } from "./api.js";

const statusLine = document.querySelector("[data-kyc-status]");
const form = document.querySelector("[data-kyc-form]");
const LABELS = {
  not_started: "Not started: fill in the form below.",
  submitted: "Submitted: a reviewer will look at it soon.",
  approved: "Approved: you can go live.",
  rejected: "Rejected",
  needs_resubmission: "Please submit again",
  expired: "Your document expired: please submit a new one.",
};

async function load() {
  const state = await api("GET", "/api/kyc/me");
  statusLine.textContent = LABELS[state.status] + (state.reason ? ` (${state.reason})` : "");
  form.querySelector("[data-agreement]").value = state.agreement_version;
  form.hidden = state.status === "submitted" || state.status === "approved";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const data = new FormData(form);
  for (const [name, value] of [...data.entries()]) {
    if ((value instanceof File && value.size === 0) || value === "") data.delete(name);
  }
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    await api("POST", "/api/kyc/submission", undefined, { form: data });
    await load();
  } catch (error) {
    showProblem(form, error);
  } finally {
    button.disabled = false;
  }
});

load().catch((e) => (statusLine.textContent = e.message));
