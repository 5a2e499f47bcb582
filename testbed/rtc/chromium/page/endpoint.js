// rtc-testbed endpoint page. Python (testbed.rtc.chromium.endpoint) calls tb.* with
// Runtime.evaluate; every time here is wall-clock ms (timeOrigin + now): identity, not timing.
"use strict";
const MAGIC = 0x54425044; // "TBPD": the trailer of a padded synthetic frame
const now = () => performance.timeOrigin + performance.now();

const tb = {
  cfg: null, pc: null, frames: [], decoded: [], rates: [], errors: [], stats: null,

  async _gathered() {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
    });
  },

  _peer() {
    // no ICE servers: host candidates in the testbed's namespaces only
    const pc = new RTCPeerConnection({ iceServers: [], encodedInsertableStreams: true });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc.iceConnectionState === "failed") this.errors.push("ICE failed");
    });
    this.pc = pc;
    return pc;
  },

  _codecs(kind) {
    // the chosen codec first, then what loss repair needs; nothing else is offered
    const cfg = this.cfg;
    const caps = RTCRtpReceiver.getCapabilities(kind).codecs;
    const mime = (c) => c.mimeType.toLowerCase();
    if (kind === "audio") return caps.filter((c) => mime(c) === "audio/opus");
    const main = caps.filter((c) => mime(c) === "video/" + cfg.codec);
    if (!main.length) throw new Error(`codec ${cfg.codec} is not offered by this browser`);
    const extra = caps.filter((c) => {
      const m = mime(c);
      if (m === "video/rtx") return cfg.nack;
      if (m === "video/red" || m === "video/ulpfec") return cfg.fec === "ulpfec";
      if (m === "video/flexfec-03") return cfg.fec === "flexfec";
      return false;
    });
    return main.concat(extra);
  },

  _pin(sdp, startOnly) {
    // fixed bitrate: x-google-min/max/start on every video codec's fmtp (added where none is);
    // startOnly (a controller of the testbed's): GCC starts at the controller's first target
    const kbps = Math.round(this.cfg.bitrateBps / 1000);
    const extra = startOnly ? `x-google-start-bitrate=${kbps}` :
      `x-google-min-bitrate=${kbps};x-google-max-bitrate=${kbps};x-google-start-bitrate=${kbps}`;
    const lines = sdp.split("\r\n");
    const pts = new Set();
    const withFmtp = new Set();
    for (const l of lines) {
      const r = l.match(/^a=rtpmap:(\d+) (VP8|VP9|H264|AV1)\/90000/i);
      if (r) pts.add(r[1]);
    }
    for (const l of lines) {
      const f = l.match(/^a=fmtp:(\d+) /);
      if (f && pts.has(f[1])) withFmtp.add(f[1]);
    }
    const out = [];
    for (const l of lines) {
      const f = l.match(/^a=fmtp:(\d+) (.*)$/);
      if (f && pts.has(f[1])) { out.push(`a=fmtp:${f[1]} ${f[2]};${extra}`); continue; }
      out.push(l);
      const r = l.match(/^a=rtpmap:(\d+) /);
      if (r && pts.has(r[1]) && !withFmtp.has(r[1])) out.push(`a=fmtp:${r[1]} ${extra}`);
    }
    return out.join("\r\n");
  },

  _voice(sdp) {
    // the audio's constant bitrate and frame length, in the description the sender applies
    // (libwebrtc's Opus encoder takes maxaveragebitrate, cbr and ptime from the remote side)
    const a = this.cfg.audio;
    const lines = sdp.split("\r\n");
    const ours = [`minptime=${a.ptimeMs}`, `maxaveragebitrate=${a.bitrateBps}`, "cbr=1", "usedtx=0"];
    const opus = (lines.find((l) => /^a=rtpmap:\d+ opus\/48000/i.test(l)) || "").match(/^a=rtpmap:(\d+)/);
    const pt = opus ? opus[1] : null;
    const hasFmtp = lines.some((l) => l.startsWith(`a=fmtp:${pt} `));
    const out = [];
    let inAudio = false;
    for (const l of lines) {
      if (l.startsWith("m=")) {
        if (inAudio) out.push(`a=ptime:${a.ptimeMs}`);
        inAudio = l.startsWith("m=audio");
      }
      if (inAudio && l.startsWith("a=ptime:")) continue;
      const f = l.match(/^a=fmtp:(\d+) (.*)$/);
      if (inAudio && f && f[1] === pt) {  // the answer's own keys, ours over them
        const keep = f[2].split(";").filter((kv) => !/^(maxaveragebitrate|cbr|usedtx|minptime)=/.test(kv));
        out.push(`a=fmtp:${pt} ${keep.concat(ours).join(";")}`);
        continue;
      }
      out.push(l);
      if (inAudio && !hasFmtp && l.startsWith(`a=rtpmap:${pt} `)) out.push(`a=fmtp:${pt} ${ours.join(";")}`);
    }
    if (inAudio) {
      const end = out.length && out[out.length - 1] === "" ? out.length - 1 : out.length;
      out.splice(end, 0, `a=ptime:${a.ptimeMs}`);
    }
    return out.join("\r\n");
  },

  _passThrough(senderOrReceiver) {
    // every sender and receiver of a peer connection with encoded streams must pipe its own
    const { readable, writable } = senderOrReceiver.createEncodedStreams();
    readable.pipeTo(writable).catch((e) => tb.errors.push("audio transform: " + e));
  },

  _sendTransform(sender) {
    const cfg = this.cfg;
    const { readable, writable } = sender.createEncodedStreams();
    const frames = this.frames;
    const pad = new TransformStream({
      transform(frame, controller) {
        const data = new Uint8Array(frame.data);
        const key = frame.type === "key";
        let size = data.length;
        if (cfg.synthetic) {
          const target = key ? cfg.keyframeBytes : cfg.frameBytes;
          if (data.length + 8 <= target) {
            const out = new Uint8Array(target);
            out.set(data);
            const dv = new DataView(out.buffer);
            dv.setUint32(target - 8, data.length);
            dv.setUint32(target - 4, MAGIC);
            frame.data = out.buffer;
            size = target;
          }
        }
        frames.push([frame.getMetadata().rtpTimestamp, now(), size, data.length, key]);
        controller.enqueue(frame);
      },
    });
    readable.pipeThrough(pad).pipeTo(writable).catch((e) => tb.errors.push("sender transform: " + e));
  },

  _recvTransform(receiver) {
    const cfg = this.cfg;
    const { readable, writable } = receiver.createEncodedStreams();
    const frames = this.frames;
    const strip = new TransformStream({
      transform(frame, controller) {
        const data = new Uint8Array(frame.data);
        let size = data.length;
        if (cfg.synthetic && data.length >= 8) {
          const dv = new DataView(frame.data);
          const n = dv.getUint32(data.length - 8);
          if (dv.getUint32(data.length - 4) === MAGIC && n <= data.length - 8) {
            frame.data = frame.data.slice(0, n);
          }
        }
        frames.push([frame.getMetadata().rtpTimestamp, now(), size, frame.type === "key"]);
        controller.enqueue(frame);
      },
    });
    readable.pipeThrough(strip).pipeTo(writable).catch((e) => tb.errors.push("receiver transform: " + e));
  },

  async sender(cfg) {
    this.cfg = cfg;
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { exact: cfg.width }, height: { exact: cfg.height }, frameRate: { exact: cfg.fps } },
      audio: cfg.audio ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : false,
    });
    const track = stream.getVideoTracks()[0];
    track.contentHint = "motion";
    const pc = this._peer();
    const tr = pc.addTransceiver(track, { direction: "sendonly" });
    tr.setCodecPreferences(this._codecs("video"));
    this._sendTransform(tr.sender);
    this.track = track;
    this.rtpSender = tr.sender;
    if (cfg.audio) {
      this.voiceTrack = stream.getAudioTracks()[0];
      const voice = pc.addTransceiver(this.voiceTrack, { direction: "sendonly" });
      voice.setCodecPreferences(this._codecs("audio"));
      this._passThrough(voice.sender);
      this.audioSender = voice.sender;
    }
    await pc.setLocalDescription(await pc.createOffer());
    await this._gathered();
    return pc.localDescription.sdp;
  },

  async answer(sdp) {
    const cfg = this.cfg;
    if (cfg.abr === "fixed") sdp = this._pin(sdp, false);
    else if (cfg.abr !== "gcc") sdp = this._pin(sdp, true);
    if (cfg.audio) sdp = this._voice(sdp);
    await this.pc.setRemoteDescription({ type: "answer", sdp });
    const p = this.rtpSender.getParameters();
    p.degradationPreference = "maintain-resolution";
    for (const e of p.encodings) {
      e.maxBitrate = cfg.encoderMaxBps;
      if (cfg.sendFps) e.maxFramerate = cfg.sendFps;
    }
    await this.rtpSender.setParameters(p);
    if (this.audioSender) {
      const q = this.audioSender.getParameters();
      for (const e of q.encodings) e.maxBitrate = cfg.audio.bitrateBps;
      await this.audioSender.setParameters(q);
    }
    return this.pc.remoteDescription.sdp;
  },

  async receiver(cfg, offer) {
    this.cfg = cfg;
    const pc = this._peer();
    const video = document.getElementById("v");
    pc.addEventListener("track", (ev) => {
      if (ev.track.kind === "audio") { this._passThrough(ev.receiver); return; }
      this._recvTransform(ev.receiver);
      video.srcObject = new MediaStream([ev.track]);
      const onFrame = (t, meta) => {
        this.decoded.push([meta.rtpTimestamp, now()]);
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
      video.play().catch((e) => this.errors.push("play: " + e));
    });
    await pc.setRemoteDescription({ type: "offer", sdp: offer });
    for (const tr of pc.getTransceivers()) {
      const kind = tr.receiver.track.kind;
      tr.direction = "recvonly";
      tr.setCodecPreferences(this._codecs(kind));
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await this._gathered();
    return pc.localDescription.sdp;
  },

  up() {
    // the media path is up (ICE connected; without encryption there is no DTLS after it)
    const state = this.pc ? this.pc.iceConnectionState : "none";
    if (state === "failed") throw new Error("ICE failed");
    return ["connected", "completed"].includes(state);
  },

  started() {
    // the session begins (Python saw up()): what came before is set-up
    this.frames.length = 0;
    this.decoded.length = 0;
    this._every = setInterval(() => this._sample(), 1000);
    return now();
  },

  async _sample() {
    const report = await this.pc.getStats();
    const row = { t: now() };
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        row.target = s.targetBitrate ?? null;
        row.bytes = s.bytesSent; row.headerBytes = s.headerBytesSent;
        row.rtxBytes = s.retransmittedBytesSent ?? 0; row.encoded = s.framesEncoded;
        row.limitation = s.qualityLimitationReason; row.width = s.frameWidth; row.height = s.frameHeight;
      }
      if (s.type === "inbound-rtp" && s.kind === "video") {
        row.bytes = s.bytesReceived; row.headerBytes = s.headerBytesReceived;
        row.decoded = s.framesDecoded; row.width = s.frameWidth; row.height = s.frameHeight;
      }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        row.available = s.availableOutgoingBitrate ?? null;
        row.rtt = s.currentRoundTripTime ?? null;
      }
    });
    this.rates.push(row);
  },

  async setTarget(bps, maxFps, scaleDown) {
    // a controller's decision: the video encoding's maxBitrate (libwebrtc's GCC runs below
    // it), maxFramerate and scaleResolutionDownBy (null: unset); returns what the sender
    // reads back
    const p = this.rtpSender.getParameters();
    for (const e of p.encodings) {
      e.maxBitrate = Math.max(1, Math.round(bps));
      if (maxFps !== null) e.maxFramerate = maxFps; else delete e.maxFramerate;
      e.scaleResolutionDownBy = scaleDown === null ? 1 : scaleDown;
    }
    await this.rtpSender.setParameters(p);
    const e = this.rtpSender.getParameters().encodings[0];
    return { maxBitrate: e.maxBitrate ?? null, maxFramerate: e.maxFramerate ?? null,
             scaleResolutionDownBy: e.scaleResolutionDownBy ?? null };
  },

  async feedback() {
    // what a controller hears on this stack: getStats figures, each with its own timestamp
    const report = await this.pc.getStats();
    const out = { t: now() };
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        out.sent = { packets: s.packetsSent, bytes: s.bytesSent, nacks: s.nackCount, plis: s.pliCount,
          firs: s.firCount, encoded: s.framesEncoded, framesSent: s.framesSent, target: s.targetBitrate ?? null,
          rtx: s.retransmittedPacketsSent ?? 0, limitation: s.qualityLimitationReason, t: s.timestamp };
      }
      if (s.type === "remote-inbound-rtp" && s.kind === "video") {
        out.remote = { fractionLost: s.fractionLost ?? null, packetsLost: s.packetsLost ?? null,
          rtt: s.roundTripTime ?? null, t: s.timestamp, reports: s.reportsReceived ?? null };
      }
      if (s.type === "media-source" && s.kind === "video") out.captured = s.frames ?? null;
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        out.pair = { available: s.availableOutgoingBitrate ?? null, rtt: s.currentRoundTripTime ?? null, t: s.timestamp };
      }
    });
    return out;
  },

  async state() {
    // what a connection that does not come up is doing (for the error message)
    const pc = this.pc;
    if (!pc) return "no peer connection";
    let pairs = [];
    try {
      const report = await pc.getStats();
      report.forEach((s) => { if (s.type === "candidate-pair") pairs.push(`${s.state}${s.nominated ? "*" : ""}`); });
    } catch (e) { pairs = ["stats: " + e]; }
    return `ICE ${pc.iceConnectionState}, connection ${pc.connectionState}, gathering ` +
      `${pc.iceGatheringState}, signaling ${pc.signalingState}, pairs [${pairs.join(" ")}], ` +
      `errors [${this.errors.join("; ")}]`;
  },

  async pause() {
    // no media until resume(): the tracks are taken off the senders (RTCP goes on)
    if (this.audioSender) await this.audioSender.replaceTrack(null);
    await this.rtpSender.replaceTrack(null);
    return now();
  },

  async resume() {
    await this.rtpSender.replaceTrack(this.track);
    if (this.audioSender) await this.audioSender.replaceTrack(this.voiceTrack);
    return now();
  },

  async stopSending() {
    if (this.audioSender) await this.audioSender.replaceTrack(null);
    if (this.rtpSender) await this.rtpSender.replaceTrack(null);
    return null;
  },

  async collect() {
    clearInterval(this._every);
    const report = await this.pc.getStats();
    const stats = {};
    report.forEach((s) => {
      if (["outbound-rtp", "inbound-rtp", "candidate-pair", "transport", "codec"].includes(s.type)) {
        if (s.type === "candidate-pair" && !s.nominated) return;
        stats[s.id] = s;
      }
    });
    const local = this.pc.localDescription ? this.pc.localDescription.sdp : null;
    const remote = this.pc.remoteDescription ? this.pc.remoteDescription.sdp : null;
    return { frames: this.frames, decoded: this.decoded, rates: this.rates, errors: this.errors,
             stats, local, remote };
  },
};
window.tb = tb;
