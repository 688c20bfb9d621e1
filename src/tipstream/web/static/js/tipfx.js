// What a landing tip looks like and sounds like: a burst over the video (CSS animation, removed
// when done) and a short chime made with WebAudio (no sound file to ship or fetch).
import { el } from "./api.js";

let audio = null;

export function chime(tokens) {
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    const notes = tokens >= 100 ? [660, 880, 1320] : [880, 1320];
    notes.forEach((freq, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + i * 0.09);
      gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.09 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.09 + 0.35);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.09);
      osc.stop(now + i * 0.09 + 0.4);
    });
  } catch {
    /* no audio device: the animation still shows */
  }
}

export function burst(layer, tip) {
  if (!layer) return;
  const size = tip.tokens >= 500 ? "huge" : tip.tokens >= 100 ? "big" : "small";
  const node = el(
    "div",
    { class: `tip-burst ${size}`, "data-tip-burst": String(tip.tip_id) },
    el("strong", {}, `${tip.tokens} tokens`),
    el("span", {}, ` from ${tip.viewer_name}`),
  );
  // A tip-menu item's label (or a short public message) rides along with the burst.
  if (tip.message) node.append(el("span", { class: "burst-message" }, tip.message.slice(0, 60)));
  layer.append(node);
  node.addEventListener("animationend", () => node.remove());
  setTimeout(() => node.remove(), 6000);
}

export function feedItem(tip) {
  const item = el("li", { class: "tip-item" }, el("strong", {}, `${tip.tokens}`), ` from ${tip.viewer_name}`);
  if (tip.message) item.append(el("q", {}, tip.message));
  return item;
}
