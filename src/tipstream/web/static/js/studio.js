// The performer's studio: camera/microphone preview and choice, go live (schedule + open the
// room + publish over the room socket), end, live tips with animation and sound, chat moderation.
import { api, clearErrors, el, showProblem } from "./api.js";
import { RoomSocket, peer } from "./roomsocket.js";
import { chatView, wireChatForm } from "./chatview.js";
import { burst, chime, feedItem } from "./tipfx.js";
import { showGoal } from "./goalview.js";
import { menuEditor } from "./tipmenu.js";

const root = document.querySelector("[data-studio]");
const me = Number(root.dataset.user);
const video = document.getElementById("preview");
const status = root.querySelector("[data-video-status]");
const form = root.querySelector("[data-go-live-form]");
const cameraSelect = root.querySelector("[data-camera]");
const micSelect = root.querySelector("[data-microphone]");
const goLive = root.querySelector("[data-go-live]");
const endButton = root.querySelector("[data-end]");
const liveState = root.querySelector("[data-live-state]");
const feed = root.querySelector("[data-tip-feed]");
const layer = root.querySelector("[data-tip-layer]");
const total = root.querySelector("[data-tip-total]");
const sound = root.querySelector("[data-sound]");
const seenTips = new Set();
let media = null;
let stream = null;
let socket = null;
let pc = null;
let iceServers = [];
let tipTotal = 0;

function say(text) {
  status.textContent = text;
  status.hidden = !text;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (select, kind, label) => {
    const chosen = select.value;
    const options = devices
      .filter((d) => d.kind === kind)
      .map((d, i) => el("option", { value: d.deviceId }, d.label || `${label} ${i + 1}`));
    select.replaceChildren(...options);
    if (chosen) select.value = chosen;
  };
  fill(cameraSelect, "videoinput", "Camera");
  fill(micSelect, "audioinput", "Microphone");
}

async function startCamera() {
  const constraints = {
    // 720p where the camera has it: simulcast then has three useful layers (1280, 640, 320).
    video: {
      width: { ideal: 1280 },
      height: { ideal: 720 },
      ...(cameraSelect.value ? { deviceId: { exact: cameraSelect.value } } : {}),
    },
    audio: micSelect.value ? { deviceId: { exact: micSelect.value } } : true,
  };
  const next = await navigator.mediaDevices.getUserMedia(constraints);
  if (media) for (const track of media.getTracks()) track.stop();
  media = next;
  video.srcObject = media;
  await video.play().catch(() => {});
  say("");
  await listDevices();
  if (pc) {
    // Switch devices while live without renegotiating.
    for (const sender of pc.getSenders()) {
      const track = media.getTracks().find((t) => sender.track && t.kind === sender.track.kind);
      if (track) await sender.replaceTrack(track);
    }
  }
}

const SIMULCAST = [
  { rid: "h", maxBitrate: 1_500_000 },
  { rid: "m", maxBitrate: 500_000, scaleResolutionDownBy: 2 },
  { rid: "l", maxBitrate: 150_000, scaleResolutionDownBy: 4 },
];

async function publish() {
  if (pc) pc.close();
  pc = peer(iceServers, socket);
  for (const track of media.getTracks()) {
    if (track.kind === "video") {
      // Simulcast: three layers (full, half, quarter size) so each viewer can pick a quality;
      // Janus expects the rids highest first. A small camera simply sends fewer layers.
      pc.addTransceiver(track, { direction: "sendonly", streams: [media], sendEncodings: SIMULCAST });
    } else {
      pc.addTrack(track, media);
    }
  }
  const current = pc;
  current.addEventListener("connectionstatechange", () => {
    if (!["failed", "disconnected"].includes(current.connectionState)) return;
    // "disconnected" often heals by itself within a moment; if not, a fresh socket publishes
    // again on its welcome (the old Janus handle goes with the old socket; the stream stays
    // live through the publisher grace period).
    setTimeout(() => {
      if (pc !== current || current.connectionState === "connected" || !stream || !socket) return;
      liveState.textContent = "Media connection lost, reconnecting…";
      socket.restart();
    }, 2000);
  });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  socket.send({ type: "publish", sdp: offer.sdp });
}

function onTip(tip) {
  if (seenTips.has(tip.tip_id)) return;
  seenTips.add(tip.tip_id);
  tipTotal += tip.tokens;
  total.textContent = tipTotal;
  feed.prepend(feedItem(tip));
  burst(layer, tip);
  if (sound.checked) chime(tip.tokens);
}

function connect() {
  socket = new RoomSocket(stream.id, {
    welcome(message) {
      iceServers = message.ice_servers;
      for (const line of message.history || []) chat.add(line);
      showGoal(root, message.goal);
      publish().catch((e) => (liveState.textContent = `Could not publish: ${e.message}`));
    },
    async answer(message) {
      await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
      await pc.flushCandidates();
    },
    ice: (m) => pc && pc.addCandidate(m.candidate),
    media_up: () => {
      liveState.textContent = "You are live.";
      root.classList.add("is-live");
    },
    media_lost: () => publish().catch(() => {}),
    chat: (m) => chat.add(m),
    deleted: (m) => chat.deleted(m),
    muted: (m) => chat.notice(`${m.name || "User " + m.user_id} is muted.`),
    slow_mode: (m) => chat.notice(m.seconds ? `Slow mode: ${m.seconds}s.` : "Slow mode off."),
    tip: onTip,
    goal: (m) => showGoal(root, m),
    goal_cleared: () => showGoal(root, null),
    viewers: (m) => (liveState.dataset.viewers = m.count),
    stream_ended: () => ended("The stream has ended."),
    error: (m) => chat.notice(m.detail || m.code),
    reconnecting: () => (liveState.textContent = "Connection lost, reconnecting…"),
    final: () => ended("The stream has ended."),
  });
  chat = chatView(root.querySelector("[data-chat-log]"), socket, { moderate: true });
  wireChatForm(root.querySelector("[data-chat-form]"), socket);
  socket.open();
}

function ended(text) {
  if (socket) socket.close();
  if (pc) pc.close();
  pc = null;
  socket = null;
  stream = null;
  root.classList.remove("is-live");
  liveState.textContent = text;
  endButton.hidden = true;
  goLive.hidden = false;
  goLive.textContent = "Go live";
}

let chat = chatView(root.querySelector("[data-chat-log]"), { send: () => false }, { moderate: true });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  goLive.disabled = true;
  try {
    if (!media) await startCamera();
    if (!stream) {
      const title = form.querySelector('[name="title"]').value.trim();
      const tags = form
        .querySelector('[name="tags"]')
        .value.split(",")
        .map((t) => t.trim())
        .filter(Boolean);
      const created = await api("POST", "/api/streams", { title, tags });
      stream = await api("POST", `/api/streams/${created.id}/live`);
    }
    liveState.textContent = "Connecting…";
    goLive.hidden = true;
    endButton.hidden = false;
    connect();
  } catch (error) {
    showProblem(form, error);
  } finally {
    goLive.disabled = false;
  }
});
// Go live comes disabled in the page: clicked before this module ran, the browser would submit
// the form itself and reload the studio, and the show would not start.
goLive.disabled = false;

endButton.addEventListener("click", async () => {
  if (!stream) return;
  endButton.disabled = true;
  try {
    await api("POST", `/api/streams/${stream.id}/end`, {});
    ended("Stream ended. Great show!");
  } catch (error) {
    showProblem(form, error);
  } finally {
    endButton.disabled = false;
  }
});

root.querySelector("[data-preview]").addEventListener("click", () =>
  startCamera().catch((e) => say(`Camera unavailable: ${e.message}`)),
);
cameraSelect.addEventListener("change", () => media && startCamera().catch(() => {}));
micSelect.addEventListener("change", () => media && startCamera().catch(() => {}));
root.querySelector("[data-slow-apply]").addEventListener("click", () => {
  if (socket) socket.send({ type: "moderate", action: "slow", seconds: Number(root.querySelector("[data-slow]").value) });
});

const goalForm = root.querySelector("[data-goal-form]");
goalForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(goalForm);
  if (!stream) {
    goalForm.querySelector("[data-form-error]").textContent = "Go live first, then set a goal.";
    return;
  }
  const body = {
    title: goalForm.querySelector('[name="title"]').value.trim(),
    tokens: Number(goalForm.querySelector('[name="tokens"]').value),
  };
  try {
    showGoal(root, await api("POST", `/api/streams/${stream.id}/goal`, body));
  } catch (error) {
    showProblem(goalForm, error);
  }
});
root.querySelector("[data-goal-clear]").addEventListener("click", async () => {
  if (!stream) return;
  try {
    await api("DELETE", `/api/streams/${stream.id}/goal`);
    showGoal(root, null);
  } catch (error) {
    showProblem(goalForm, error);
  }
});

menuEditor(root.querySelector("[data-menu-form]"), me);

async function init() {
  await listDevices().catch(() => {});
  try {
    const kyc = await api("GET", "/api/kyc/me");
    if (!kyc.may_publish) {
      const note = root.querySelector("[data-kyc-note]");
      note.hidden = false;
      note.replaceChildren("You can go live once your identity is verified. ", el("a", { href: "/studio/kyc" }, "Verification status"));
    }
  } catch {
    /* admins have no KYC record; the API decides when they try */
  }
  // A reload while live: pick the stream up again instead of scheduling another.
  const live = await api("GET", "/api/streams").catch(() => []);
  const mine = live.find((s) => s.performer_id === me);
  if (mine) {
    stream = mine;
    goLive.textContent = "Resume broadcast";
    liveState.textContent = `Your stream "${mine.title}" is live; resume to keep broadcasting.`;
    endButton.hidden = false;
  }
}
init();
