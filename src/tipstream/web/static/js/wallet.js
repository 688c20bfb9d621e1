// Wallet: balance, token packages (→ the processor's hosted page → back here), history.
import { api, el, refreshBalance, when } from "./api.js";

const balance = document.querySelector("[data-wallet-balance]");
const packages = document.querySelector("[data-packages]");
const history = document.querySelector("[data-history]");
const more = document.querySelector("[data-more]");
const note = document.querySelector("[data-purchase-status]");
const errorLine = document.querySelector("[data-form-error]");
let cursor = null;

async function showBalance() {
  const wallet = await refreshBalance();
  if (wallet) balance.textContent = wallet.available;
  return wallet;
}

async function loadPackages() {
  const list = await api("GET", "/api/wallet/packages");
  packages.replaceChildren(
    ...list.map((p) => {
      const button = el("button", { type: "button", class: "primary", "data-package": p.id }, `Buy for ${p.price} ${p.currency}`);
      button.addEventListener("click", () => buy(p.id, button));
      // The operator's label often just repeats the amount ("1,200 tokens"): shown only when it says more.
      const amount = `${p.tokens.toLocaleString("en-US")} tokens`;
      const label = p.label && p.label !== amount ? [el("p", { class: "muted" }, p.label)] : [];
      return el("li", { class: "card package" }, el("h3", { class: "big" }, amount), ...label, button);
    }),
  );
}

async function buy(packageId, button) {
  errorLine.textContent = "";
  button.disabled = true;
  try {
    const checkout = await api("POST", "/api/purchases/", { package_id: packageId });
    window.location.assign(checkout.redirect_url);
  } catch (error) {
    errorLine.textContent = error.message;
    button.disabled = false;
  }
}

async function loadHistory() {
  const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
  const page = await api("GET", `/api/wallet/history${query}`);
  for (const item of page.items) {
    const amount = el("td", { class: `num ${item.amount < 0 ? "out" : "in"}` }, item.amount_display);
    history.append(el("tr", {}, el("td", {}, when(item.at)), el("td", {}, item.kind.replaceAll("_", " ")), amount));
  }
  if (!page.items.length && !cursor) history.append(el("tr", {}, el("td", { colSpan: 3 }, "Nothing yet.")));
  cursor = page.next_cursor;
  more.hidden = !cursor;
}
more.addEventListener("click", () => loadHistory());

// Back from the hosted page: the webhook may land a moment after the redirect, so watch the
// purchase until it is credited (or failed) and then show the new balance.
async function followPurchase(id) {
  note.hidden = false;
  note.textContent = "Payment received, adding your tokens…";
  for (let i = 0; i < 20; i++) {
    const purchases = await api("GET", "/api/purchases/?limit=20");
    const purchase = purchases.find((p) => p.id === id);
    if (purchase && purchase.status === "credited") {
      await showBalance();
      note.textContent = `${purchase.tokens} tokens added. Enjoy the show!`;
      history.replaceChildren();
      cursor = null;
      await loadHistory();
      return;
    }
    if (purchase && purchase.status !== "pending") {
      note.textContent = `The payment was not completed (${purchase.status}).`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  note.textContent = "Your payment is still being confirmed; the tokens will appear shortly.";
}

showBalance();
loadPackages().catch((e) => (errorLine.textContent = e.message));
loadHistory().catch((e) => (errorLine.textContent = e.message));
const purchaseId = Number(new URLSearchParams(location.search).get("purchase"));
if (purchaseId) followPurchase(purchaseId).catch(() => {});
