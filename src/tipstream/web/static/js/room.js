// A viewer in a room: subscribe to the performer's media through the room socket, chat, tip.
import { api, newKey, refreshBalance, showProblem, clearErrors, el } from "./api.js";
import { RoomSocket, peer } from "./roomsocket.js";
import { chatView, wireChatForm } from "./chatview.js";
import { burst, feedItem } from "./tipfx.js";
import { showGoal } from "./goalview.js";
import { menuUrl, menuView } from "./tipmenu.js";

const root = document.querySelector("[data-room]");
const streamId = Number(root.dataset.room);
const performerId = Number(root.dataset.performer);
const video = document.getElementById("remote");
const status = root.querySelector("[data-video-status]");
const feed = root.querySelector("[data-tip-feed]");
const layer = root.querySelector("[data-tip-layer]");
const topList = root.querySelector("[data-top-tippers]");
// The page comes with the show's recent tips and top tippers (a viewer joining late sees who
// tipped); tips already on the page are not counted again when the room socket delivers them.
const seenTips = new Set([...feed.querySelectorAll("[data-tip-id]")].map((li) => Number(li.dataset.tipId)));
const totals = new Map([...topList.querySelectorAll("[data-tipper]")].map((li) => [li.dataset.tipper, Number(li.dataset.tokens)]));
let pc = null;
let iceServers = [];
let quality = 2;
let over = false; // the show ended: later media and socket news must not replace that line

// Once the show is over there is nobody to tip or chat with: the tip box, the tip menu and the
// chat box go, and nobody is watching any more.
function showIsOver() {
  over = true;
  for (const part of root.querySelectorAll("[data-tip-form], [data-tip-menu], [data-chat-form]")) part.hidden = true;
  root.querySelector("[data-viewers]").textContent = "0";
}

function say(text) {
  if (over) return;
  status.textContent = text;
  status.hidden = !text;
}

function closePeer() {
  if (pc) pc.close();
  pc = null;
}

// The server allows one subscription per socket (one Janus handle): a second one (the
// performer came back, or our media path died) starts over on a fresh socket, whose welcome
// subscribes again.
let subscribedHere = false;
function subscribe() {
  closePeer();
  say("Connecting to the video…");
  if (subscribedHere) {
    subscribedHere = false;
    socket.restart();
    return;
  }
  subscribedHere = socket.send({ type: "subscribe", substream: quality });
}

async function onOffer(message) {
  closePeer();
  pc = peer(iceServers, socket);
  pc.addEventListener("track", (event) => {
    if (video.srcObject !== event.streams[0]) {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
    }
  });
  const current = pc;
  current.addEventListener("connectionstatechange", () => {
    if (!["failed", "disconnected"].includes(current.connectionState)) return;
    say("Reconnecting the video…");
    // "disconnected" often heals by itself; if not, subscribe again.
    setTimeout(() => pc === current && current.connectionState !== "connected" && subscribe(), 1500);
  });
  await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
  await pc.flushCandidates();
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  socket.send({ type: "answer", sdp: answer.sdp });
}

function onTip(tip) {
  if (seenTips.has(tip.tip_id)) return;
  seenTips.add(tip.tip_id);
  root.querySelector("[data-no-tips]")?.remove();
  feed.prepend(feedItem(tip));
  burst(layer, tip);
  totals.set(tip.viewer_name, (totals.get(tip.viewer_name) || 0) + tip.tokens);
  const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
  topList.replaceChildren(...top.map(([name, n]) => el("li", {}, `${name}: ${n}`)));
}

const chatLog = root.querySelector("[data-chat-log]");
const socket = new RoomSocket(streamId, {
  welcome(message) {
    iceServers = message.ice_servers;
    subscribedHere = false;
    chat.notice("You joined the room.");
    for (const line of message.history || []) chat.add(line);
    showGoal(root, message.goal);
    loadMenu();
    if (message.publisher_up) subscribe();
    else say("Waiting for the performer to start the camera…");
  },
  offer: (m) => onOffer(m).catch((e) => say(`Video failed: ${e.message}`)),
  ice: (m) => pc && pc.addCandidate(m.candidate),
  media_up: () => say(""),
  publisher_up: () => subscribe(),
  publisher_down: () => say("The performer's camera dropped; waiting…"),
  media_lost: () => subscribe(),
  media_ended: () => say("The video stopped."),
  chat: (m) => chat.add(m),
  deleted: (m) => chat.deleted(m),
  muted: (m) => chat.notice(`${m.name || "A user"} was muted.`),
  slow_mode: (m) => chat.notice(m.seconds ? `Slow mode: one message every ${m.seconds}s.` : "Slow mode is off."),
  tip: onTip,
  goal: (m) => showGoal(root, m),
  goal_cleared: () => showGoal(root, null),
  tip_menu: (m) => showMenu(m),
  viewers: (m) => {
    root.querySelector("[data-viewers]").textContent = m.count;
  },
  stream_ended: () => {
    closePeer();
    say("The show has ended. Thanks for watching!");
    showIsOver();
  },
  error: (m) => {
    // A refused subscription leaves no handle behind: the next one may use this socket.
    if (m.code === "no-publisher" || m.code === "subscribe-failed") subscribedHere = false;
    if (m.code === "no-publisher") say("Waiting for the performer to start the camera…");
    else chat.notice(m.detail || m.code);
  },
  reconnecting: () => say("Connection lost, reconnecting…"),
  final: (code) => {
    closePeer();
    say(code === 4409 ? "This show has ended or is not live yet." : code === 4403 ? "You can't join this room." : "Log in to watch.");
    if (code === 4409) showIsOver();
  },
});
const chat = chatView(chatLog, socket, {
  onReport: (m) => openReport("message", m),
  onReportUser: (m) => openReport("user", m),
  me: Number(root.dataset.me || 0),
});

// Reports (moderation API): the stream, a chat message, or the user who wrote it.
const dialog = document.querySelector("[data-report-dialog]");
let reporting = null;
function openReport(target, message) {
  if (!dialog) return;
  reporting = { target, message };
  const what = { stream: "this stream", message: `${message && message.name}'s message`, user: message && message.name };
  dialog.querySelector("[data-report-what]").textContent = what[target];
  clearErrors(dialog.querySelector("form"));
  dialog.showModal();
}
if (dialog) {
  const form = dialog.querySelector("form");
  dialog.querySelector("[data-report-cancel]").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { target: reporting.target, reason: form.querySelector('[name="reason"]').value, stream_id: streamId };
    if (reporting.target === "message") body.message_id = reporting.message.id;
    if (reporting.message) body.user_id = reporting.message.user_id;
    try {
      await api("POST", "/api/moderation/reports", body);
      dialog.close();
      chat.notice("Thanks, a moderator will look at your report.");
      // The chat may be a screen away on a phone: say it where the report was made too.
      if (reporting.target === "stream") {
        const button = root.querySelector('[data-report="stream"]');
        button.textContent = "Reported, thanks";
        button.disabled = true;
      }
    } catch (error) {
      showProblem(form, error);
    }
  });
  root.querySelector('[data-report="stream"]').addEventListener("click", () => openReport("stream", null));
}

if (root.dataset.signedIn === "yes") {
  socket.open();
  wireChatForm(root.querySelector("[data-chat-form]"), socket);
}

root.querySelector("[data-unmute]").addEventListener("click", (event) => {
  video.muted = !video.muted;
  event.target.textContent = video.muted ? "Unmute" : "Mute";
});
root.querySelector("[data-quality]").addEventListener("change", (event) => {
  quality = Number(event.target.value);
  socket.send({ type: "quality", substream: quality });
});

const tipForm = root.querySelector("[data-tip-form]");
// One idempotency key per tip: a retry of the same tip (same body after a network error or a
// 5xx) reuses it, so it is never charged twice; any other tip gets a fresh key.
let pending = null;
async function sendTip(body, button) {
  clearErrors(tipForm);
  const text = JSON.stringify(body);
  if (!pending || pending.text !== text) pending = { text, key: newKey() };
  button.disabled = true;
  try {
    await api("POST", `/api/streams/${streamId}/tips`, body, { idempotencyKey: pending.key });
    pending = null;
    refreshBalance();
    return true;
  } catch (error) {
    if (error.status && error.status < 500) pending = null;
    showProblem(tipForm, error);
    return false;
  } finally {
    button.disabled = false;
  }
}

const showMenu = menuView(root.querySelector("[data-tip-menu]"), {
  signedIn: root.dataset.signedIn === "yes",
  onTip: (item, button) => sendTip({ tokens: item.tokens, message: item.label }, button),
});
function loadMenu() {
  api("GET", menuUrl(performerId))
    .then((menu) => over || showMenu(menu))
    .catch(() => {});
}
loadMenu();

if (tipForm) {
  const amount = tipForm.querySelector('[name="tokens"]');
  for (const preset of tipForm.querySelectorAll("[data-preset]")) {
    preset.addEventListener("click", () => {
      amount.value = preset.dataset.preset;
      tipForm.requestSubmit();
    });
  }
  tipForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const messageInput = tipForm.querySelector('[name="message"]');
    const message = messageInput.value.trim();
    const body = { tokens: Number(amount.value) };
    if (message) body.message = message;
    if (await sendTip(body, tipForm.querySelector("[data-tip-button]"))) messageInput.value = "";
  });
}
