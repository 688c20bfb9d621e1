// Tip menus (API: /api/performers/{id}/tip-menu). The studio edits the performer's own menu as
// a list of rows; the room shows it as one-click tip buttons and follows live "tip_menu" events.
import { api, clearErrors, el, showProblem } from "./api.js";

export const MAX_ITEMS = 20;
const MAX_LABEL = 60;

export function menuUrl(performerId) {
  return `/api/performers/${performerId}/tip-menu`;
}

// ------------------------------------------------------------------ studio: the menu editor

export function menuEditor(form, performerId) {
  const rows = form.querySelector("[data-menu-rows]");
  const add = form.querySelector("[data-menu-add]");
  const state = form.querySelector("[data-menu-state]");

  // Inputs are named like the API's field errors (items[2].label), so showProblem puts each
  // error next to the right row.
  function renumber() {
    [...rows.children].forEach((row, i) => {
      const n = i + 1;
      for (const [field, text] of [["label", "name"], ["tokens", "tokens"]]) {
        const input = row.querySelector(`[data-field="${field}"]`);
        input.name = `items[${i}].${field}`;
        input.id = `menu-${i}-${field}`;
        input.setAttribute("aria-label", `Item ${n} ${text}`);
        const slot = row.querySelector(`[data-slot="${field}"]`);
        slot.dataset.errorFor = input.name;
        slot.id = `${input.id}-error`;
      }
      row.querySelector("[data-up]").setAttribute("aria-label", `Move item ${n} up`);
      row.querySelector("[data-up]").disabled = i === 0;
      row.querySelector("[data-down]").setAttribute("aria-label", `Move item ${n} down`);
      row.querySelector("[data-down]").disabled = i === rows.children.length - 1;
      row.querySelector("[data-remove]").setAttribute("aria-label", `Remove item ${n}`);
    });
    add.disabled = rows.children.length >= MAX_ITEMS;
  }

  function addRow(item = { label: "", tokens: 50 }) {
    const label = el("input", { type: "text", maxLength: MAX_LABEL, value: item.label, "data-field": "label", placeholder: "e.g. Dance" });
    const tokens = el("input", { type: "number", min: 1, value: String(item.tokens), "data-field": "tokens", inputMode: "numeric" });
    const up = el("button", { type: "button", class: "tiny", "data-up": "" }, "↑");
    const down = el("button", { type: "button", class: "tiny", "data-down": "" }, "↓");
    const remove = el("button", { type: "button", class: "tiny", "data-remove": "" }, "Remove");
    const row = el(
      "li",
      { class: "menu-row" },
      el("div", { class: "menu-fields" }, label, tokens),
      el("p", { class: "field-error", "data-slot": "label" }),
      el("p", { class: "field-error", "data-slot": "tokens" }),
      el("div", { class: "menu-buttons" }, up, down, remove),
    );
    up.addEventListener("click", () => {
      if (row.previousElementSibling) row.previousElementSibling.before(row);
      renumber();
      up.focus();
    });
    down.addEventListener("click", () => {
      if (row.nextElementSibling) row.nextElementSibling.after(row);
      renumber();
      down.focus();
    });
    remove.addEventListener("click", () => {
      row.remove();
      renumber();
      add.focus();
    });
    rows.append(row);
    renumber();
    return label;
  }

  function show(menu) {
    rows.replaceChildren();
    for (const item of menu.items) addRow(item);
    renumber();
  }

  add.addEventListener("click", () => addRow().focus());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    state.textContent = "";
    const items = [...rows.children].map((row) => ({
      label: row.querySelector('[data-field="label"]').value,
      tokens: Number(row.querySelector('[data-field="tokens"]').value),
    }));
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      show(await api("PUT", menuUrl(performerId), { items }));
      state.textContent = items.length ? "Menu saved." : "Menu cleared.";
    } catch (error) {
      showProblem(form, error);
    } finally {
      button.disabled = false;
    }
  });

  // The buttons come disabled in the page: nothing to edit until this module runs and the
  // saved menu is in (rows added before it arrived would be wiped).
  const save = form.querySelector('button[type="submit"]');
  api("GET", menuUrl(performerId))
    .then(show)
    .catch((error) => showProblem(form, error))
    .finally(() => {
      save.disabled = false;
      renumber();
    });
}

// ------------------------------------------------------------------ room: one-click menu tips

export function menuView(section, { onTip, signedIn }) {
  const list = section.querySelector("[data-tip-menu-items]");
  return function show(menu) {
    const items = (menu && menu.items) || [];
    section.hidden = items.length === 0;
    list.replaceChildren(
      ...items.map((item) => {
        const text = [el("span", { class: "menu-label" }, item.label), " ", el("span", { class: "menu-price" }, `${item.tokens} tokens`)];
        if (!signedIn) return el("li", {}, ...text);
        const button = el("button", { type: "button", "data-menu-item": item.label }, ...text);
        button.addEventListener("click", () => onTip(item, button));
        return el("li", {}, button);
      }),
    );
  };
}
