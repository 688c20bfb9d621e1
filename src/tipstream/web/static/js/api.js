// The one way pages talk to the JSON API: same-origin fetch, the session's CSRF token on every
// state-changing request, and problem+json turned into an ApiError the forms can show.

export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export function newKey() {
  return crypto.randomUUID();
}

export async function api(method, path, body, { idempotencyKey, form } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrfToken();
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  let payload;
  if (form) {
    payload = form; // FormData: the browser sets the multipart boundary
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text.slice(0, 200) };
  }
  if (!response.ok) throw new ApiError(data || {}, response.status);
  return data;
}

// Field errors of a problem+json answer: Litestar's validation list ({key, message}) or a
// problem's own "field" member; everything else goes to the form's general error line. A key
// like items[2].label goes to the slot for exactly that key if the form has one (list editors),
// else to the slot of its last part (label).
export function showProblem(form, error) {
  clearErrors(form);
  const general = form.querySelector("[data-form-error]");
  const problem = error instanceof ApiError ? error.problem : { detail: String(error.message || error) };
  let placed = false;
  const unplaced = [];
  for (const item of problem.errors || []) {
    const full = CSS.escape(item.key || "");
    const exact = form.querySelector(`[data-error-for="${full}"]`);
    const key = exact ? full : CSS.escape((item.key || "").split(".").pop());
    const slot = exact || form.querySelector(`[data-error-for="${key}"]`);
    if (slot) {
      slot.textContent = item.message;
      const input = form.querySelector(`[name="${key}"]`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        if (slot.id) input.setAttribute("aria-describedby", slot.id);
      }
      placed = true;
    } else {
      unplaced.push(item);
    }
  }
  if (problem.field) {
    const slot = form.querySelector(`[data-error-for="${problem.field}"]`);
    if (slot) {
      slot.textContent = problem.detail;
      placed = true;
    }
  }
  // A field error with no slot on this form still names its field, rather than the bare
  // "Validation failed for POST /api/..." of the problem's detail.
  const named = unplaced.map((item) => `${(item.key || "input").split(".").pop().replaceAll("_", " ")} ${item.message}`);
  if (general && !placed) general.textContent = named.join("; ") || problem.detail || problem.title || "Something went wrong";
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

export function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for], [data-form-error]")) slot.textContent = "";
  for (const input of form.querySelectorAll('[aria-invalid="true"]')) input.removeAttribute("aria-invalid");
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-") || name === "type" || name === "href" || name === "role") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function when(iso) {
  return new Date(iso).toLocaleString();
}

export async function refreshBalance() {
  const slots = document.querySelectorAll("[data-balance]");
  if (!slots.length || !csrfToken()) return null;
  try {
    const wallet = await api("GET", "/api/wallet/");
    for (const slot of slots) slot.textContent = wallet.available;
    return wallet;
  } catch {
    return null;
  }
}
