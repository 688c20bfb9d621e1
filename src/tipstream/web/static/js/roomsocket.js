// The room WebSocket (/ws/rooms/{id}, docs/rooms.md): JSON messages, keep-alive pings, and a
// reconnect with backoff after a network blip; the page re-negotiates media on each welcome.

const FINAL_CODES = new Set([4401, 4403, 4404, 4409]);

export class RoomSocket {
  constructor(streamId, handlers) {
    this.streamId = streamId;
    this.handlers = handlers;
    this.attempt = 0;
    this.closed = false;
    this.socket = null;
    this.pinger = null;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/rooms/${this.streamId}`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.pinger = setInterval(() => this.send({ type: "ping" }), 20000);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      const handler = this.handlers[message.type];
      if (handler) handler(message);
      if (this.handlers.any) this.handlers.any(message);
    });
    socket.addEventListener("close", (event) => {
      clearInterval(this.pinger);
      if (this.closed) return;
      if (FINAL_CODES.has(event.code)) {
        if (this.handlers.final) this.handlers.final(event.code, event.reason);
        return;
      }
      if (this.handlers.reconnecting) this.handlers.reconnecting();
      const delay = Math.min(10000, 500 * 2 ** this.attempt++);
      setTimeout(() => this.open(), delay);
    });
  }

  // Start over on a fresh socket, and so a fresh media session on the server (one socket holds
  // one Janus handle, which refuses a second subscribe or publish): for a media path that died
  // while the socket stayed up. The welcome of the new socket renegotiates the media.
  restart() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.close(4000, "restart");
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  close() {
    this.closed = true;
    clearInterval(this.pinger);
    if (this.socket) this.socket.close(1000, "bye");
  }
}

// One RTCPeerConnection with the SFU: our candidates go out over the socket, Janus's come in
// through addCandidate (held until the remote description is set).
export function peer(iceServers, socket) {
  const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
  const early = [];
  pc.addEventListener("icecandidate", (event) => {
    const c = event.candidate;
    socket.send({
      type: "ice",
      candidate: c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null,
    });
  });
  pc.addCandidate = async (candidate) => {
    if (!pc.remoteDescription) {
      early.push(candidate);
      return;
    }
    try {
      await pc.addIceCandidate(candidate || null);
    } catch {
      /* a stale candidate after a renegotiation: harmless */
    }
  };
  pc.flushCandidates = async () => {
    while (early.length) await pc.addCandidate(early.shift());
  };
  return pc;
}

export function emoteText(text) {
  return text.replace(/:fire:/g, "🔥").replace(/:heart:/g, "😍").replace(/:lol:/g, "😂");
}
