// Forms that post JSON to the API (data-api): values by name, empty optional fields left out,
// field errors from problem+json. Sign-up logs the new user in straight away.
import { api, clearErrors, showProblem } from "./api.js";

function collect(form) {
  const body = {};
  for (const input of form.querySelectorAll("input, select, textarea")) {
    if (!input.name || input.hasAttribute("data-local")) continue;
    if (input.type === "radio" && !input.checked) continue;
    if (input.type === "checkbox") {
      body[input.name] = input.checked;
      continue;
    }
    if (input.value === "" && (input.hasAttribute("data-optional") || !input.required)) continue;
    body[input.name] = input.value;
  }
  return body;
}

// Log in to an account with 2FA, the code left out: open the code field and ask for it in
// words, rather than show the API's "send totp_code or recovery_code".
function askForCode(form, error) {
  const type = (error && error.problem && error.problem.type) || "";
  const code = form.querySelector('[name="totp_code"]');
  if (!type.endsWith("/totp-required") || !code) return false;
  const details = code.closest("details");
  if (details) details.open = true;
  const slot = form.querySelector('[data-error-for="totp_code"]');
  if (slot) slot.textContent = "This account uses two-factor authentication: enter the 6-digit code from your authenticator app.";
  code.setAttribute("aria-invalid", "true");
  if (slot && slot.id) code.setAttribute("aria-describedby", slot.id);
  code.focus();
  return true;
}

for (const form of document.querySelectorAll("form[data-api]")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    for (const box of form.querySelectorAll("input[data-local][required]")) {
      if (!box.checked) {
        const slot = form.querySelector(`[data-error-for="${box.name}"]`);
        if (slot) slot.textContent = "Please confirm your age to continue.";
        box.focus();
        return;
      }
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const body = collect(form);
    try {
      await api("POST", form.dataset.api, body);
      if (form.hasAttribute("data-then-login")) {
        await api("POST", "/api/auth/login", { email: body.email, password: body.password });
        window.location.assign(body.role === "performer" ? "/studio/kyc" : form.dataset.next || "/");
        return;
      }
      window.location.assign(form.dataset.next || "/");
    } catch (error) {
      if (!askForCode(form, error)) showProblem(form, error);
    } finally {
      button.disabled = false;
    }
  });
  // The button comes disabled in the page: clicked before this module ran, the browser would
  // submit the form itself (the password in a request the API never sees).
  form.querySelector('button[type="submit"]').disabled = false;
}
