// The chat list shared by the room and the studio; with moderate=true each message gets
// delete and mute buttons (the performer in their own room).
import { el } from "./api.js";
import { emoteText } from "./roomsocket.js";

const MAX_MESSAGES = 200;

export function chatView(log, socket, { moderate = false, onReport = null, onReportUser = null, me = 0 } = {}) {
  function add(message) {
    // A reconnect's welcome repeats the recent history: keep each message once.
    if (message.id && log.querySelector(`[data-message="${message.id}"]`)) return;
    const item = el(
      "li",
      { "data-message": String(message.id) },
      el("strong", {}, message.name || "someone"),
      ": ",
      el("span", { class: "text" }, emoteText(message.text || "")),
    );
    if (moderate) {
      const del = el("button", { type: "button", class: "tiny", "aria-label": `Delete message from ${message.name}` }, "Delete");
      del.addEventListener("click", () => socket.send({ type: "moderate", action: "delete", message_id: message.id }));
      const mute = el("button", { type: "button", class: "tiny", "aria-label": `Mute ${message.name}` }, "Mute");
      mute.addEventListener("click", () => socket.send({ type: "moderate", action: "mute", user_id: message.user_id, seconds: 600 }));
      item.append(" ", del, " ", mute);
    }
    const theirs = message.user_id !== me; // nobody reports themselves
    if (onReport && message.id && theirs) {
      const report = el("button", { type: "button", class: "tiny", "aria-label": `Report message from ${message.name}` }, "Report");
      report.addEventListener("click", () => onReport(message));
      item.append(" ", report);
    }
    if (onReportUser && message.user_id && theirs) {
      const reportUser = el("button", { type: "button", class: "tiny", "aria-label": `Report user ${message.name}` }, "Report user");
      reportUser.addEventListener("click", () => onReportUser(message));
      item.append(" ", reportUser);
    }
    log.append(item);
    while (log.children.length > MAX_MESSAGES) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }
  function notice(text) {
    log.append(el("li", { class: "notice-line" }, text));
    log.scrollTop = log.scrollHeight;
  }
  function deleted(event) {
    const node = log.querySelector(`[data-message="${event.message_id}"]`);
    if (node) node.remove();
  }
  return { add, notice, deleted };
}

export function wireChatForm(form, socket) {
  if (!form) return;
  const input = form.querySelector('[name="text"]');
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (socket.send({ type: "chat", text })) input.value = "";
  });
  for (const button of form.querySelectorAll("[data-emote]")) {
    button.addEventListener("click", () => {
      input.value += button.dataset.emote;
      input.focus();
    });
  }
}
