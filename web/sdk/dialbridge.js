// dialbridge JavaScript SDK: the gateway's HTTP API, its room event streams and the WebRTC
// audio join, for browsers (and Node.js 18+ for everything but media).
// Types: dialbridge.d.ts. Guide: README.md.

export const TALK_BASE = '/ocs/v2.php/apps/spreed/api/v4';
export const API_BASE = '/api/v1';

/** In-call flags of the call API. */
export const Flags = Object.freeze({ IN_CALL: 1, AUDIO: 2, VIDEO: 4, PHONE: 8 });

/** Phone leg states, as the room's `callstatus` events and participants name them. */
export const PhoneStatus = Object.freeze({
  ACCEPTED: 'accepted',
  RINGING: 'ringing',
  CONNECTED: 'connected',
  REJECTED: 'rejected',
  CLEARED: 'cleared',
});

const CAUSE_WORDS = {
  busy: 'busy',
  declined: 'declined',
  unavailable: 'unavailable',
  'invalid-number': 'invalid number',
  'no-answer': 'no answer',
  failed: 'call failed',
  hangup: 'hung up',
  ended: 'call ended',
  removed: 'removed from the room',
  'media-timeout': 'lost audio',
  'max-duration': 'time limit reached',
  shutdown: 'gateway restarted',
  'wrong-pin': 'wrong PIN',
  'no-call': 'no call to join',
};

/** A hangup cause (`busy`, `no-answer`, ...) in words a person understands. */
export function describeCause(cause) {
  if (!cause) return '';
  return CAUSE_WORDS[cause] ?? cause.replace(/-/g, ' ');
}

/** A phone leg's state in words: `ringing`, `connected`, `cleared: busy`... */
export function describePhone(phone) {
  if (!phone || !phone.status) return 'not called';
  switch (phone.status) {
    case PhoneStatus.ACCEPTED:
      return 'calling';
    case PhoneStatus.RINGING:
      return 'ringing';
    case PhoneStatus.CONNECTED:
      return 'connected';
    default: {
      const why = describeCause(phone.cause);
      return why ? `${phone.status}: ${why}` : phone.status;
    }
  }
}

/**
 * Every failure of the SDK: the HTTP status (0 when no answer came), the API's short error word
 * (`auth`, `trunk`, `allowlist`...) and a message for people.
 */
export class DialbridgeError extends Error {
  constructor(status, error, message, body = null) {
    super(message || error || `HTTP ${status}`);
    this.name = 'DialbridgeError';
    this.status = status;
    this.error = error || 'error';
    this.body = body;
  }
}

/** The error an HTTP answer carries: OCS envelopes, JSON `{error, message}` bodies or text. */
export function errorFromResponse(status, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const ocs = body && body.ocs;
  if (ocs && ocs.meta) {
    const word = (ocs.data && typeof ocs.data.error === 'string' && ocs.data.error) || 'error';
    return new DialbridgeError(status, word, ocs.meta.message || `HTTP ${status}`, body);
  }
  // The seed's Rocket.Chat shape (voice.call, push.token): {success: false, error, errorType}.
  if (body && typeof body === 'object' && typeof body.errorType === 'string') {
    return new DialbridgeError(status, body.errorType, body.error || `HTTP ${status}`, body);
  }
  if (body && typeof body === 'object' && typeof body.error === 'string') {
    return new DialbridgeError(status, body.error, body.message || body.error, body);
  }
  // The call SDK's shape (direct calls): {statusCode, message}.
  if (body && typeof body === 'object' && typeof body.message === 'string') {
    return new DialbridgeError(status, 'call', body.message, body);
  }
  const plain = (text || '').trim();
  return new DialbridgeError(status, 'http', plain || `HTTP ${status}`, body);
}

/** Builds one API request: URL, method, headers and body. Pure, so it is tested alone. */
export function buildRequest(baseUrl, token, method, path, { json, body, contentType, headers } = {}) {
  const all = { Accept: 'application/json', 'OCS-APIRequest': 'true', ...headers };
  if (token) all.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    all['Content-Type'] = 'application/json';
    payload = JSON.stringify(json);
  } else if (contentType) {
    all['Content-Type'] = contentType;
  }
  return {
    url: `${baseUrl.replace(/\/+$/, '')}${path}`,
    init: { method, headers: all, body: payload, credentials: 'same-origin' },
  };
}

/**
 * Incremental parser of a Server-Sent Events stream (the WHATWG rules): feed it text as it
 * arrives, take the complete events.
 */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.data = [];
    this.event = '';
    this.id = null;
    this.lastEventId = null;
  }

  /** Returns the events completed by this text: `{id, event, data}`. */
  push(text) {
    this.buffer += text;
    const out = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      if (line === '') {
        if (this.id !== null) this.lastEventId = this.id;
        if (this.data.length > 0) {
          out.push({ id: this.lastEventId, event: this.event || 'message', data: this.data.join('\n') });
        }
        this.data = [];
        this.event = '';
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'event') this.event = value;
      else if (field === 'id' && !value.includes('\0')) this.id = value;
    }
    return out;
  }
}

/** A room event from one SSE event: the JSON object with its `type`, or null if malformed. */
export function parseRoomEvent(sse) {
  try {
    const event = JSON.parse(sse.data);
    if (!event || typeof event !== 'object' || typeof event.type !== 'string') return null;
    if (sse.id !== null && sse.id !== undefined) event.eventId = sse.id;
    return event;
  } catch {
    return null;
  }
}

/** A small listener registry, the same in browsers and Node.js. */
class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  /** Calls `listener` for each `type` event; returns a function that removes it. */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this.listeners.get(type)?.delete(listener);
  }

  emit(type, value) {
    for (const listener of [...(this.listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        console.error(`dialbridge: a ${type} listener failed`, e);
      }
    }
  }
}

/**
 * An event stream of the gateway: typed events, reconnection with back-off, and a watchdog that treats
 * a stream silent for longer than the server's keep-alive as lost. The server does not replay
 * missed events, so each reconnection emits `open` with `resumed: true`: state must be fetched
 * again (RoomState does).
 *
 * Events: `open` {resumed}, `event` (every room event), one per event type (`callstatus`,
 * `participant-joined`...), `lagged`, `disconnected` {error}, `closed` {reason}.
 */
export class EventStream extends Emitter {
  constructor(client, path, { retryMin = 500, retryMax = 10_000, staleAfter = 40_000 } = {}) {
    super();
    this.client = client;
    this.path = path;
    this.retryMin = retryMin;
    this.retryMax = retryMax;
    this.staleAfter = staleAfter;
    this.connected = false;
    this.stopped = false;
    this.opened = 0;
    this.lastEventId = null;
    this.abort = null;
    this.timer = null;
  }

  /** Starts reading (and reconnecting); returns once the first connection is open or failed. */
  start() {
    this.stopped = false;
    return new Promise((resolve) => {
      const offs = ['open', 'disconnected', 'closed'].map((type) =>
        this.on(type, () => {
          for (const off of offs) off();
          resolve();
        }),
      );
      this.loop();
    });
  }

  /** Stops the stream for good. */
  stop() {
    this.stopped = true;
    this.abort?.abort();
    clearTimeout(this.timer);
  }

  async loop() {
    let delay = this.retryMin;
    while (!this.stopped) {
      const outcome = await this.readOnce();
      if (this.stopped) return;
      if (outcome.final) {
        this.stopped = true;
        this.emit('closed', { reason: outcome.reason, error: outcome.error });
        return;
      }
      if (outcome.opened) delay = this.retryMin;
      await new Promise((resolve) => {
        this.timer = setTimeout(resolve, delay);
      });
      delay = Math.min(delay * 2, this.retryMax);
    }
  }

  async readOnce() {
    const abort = new AbortController();
    this.abort = abort;
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(new Error('stream silent')), this.staleAfter);
    };
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId !== null) headers['Last-Event-ID'] = this.lastEventId;
    let opened = false;
    try {
      arm();
      const response = await this.client.fetchRaw('GET', this.path, { headers, signal: abort.signal });
      if (!response.ok) {
        const error = errorFromResponse(response.status, await response.text());
        // Access is gone or never was: reconnecting cannot help.
        const final = [401, 403, 404].includes(response.status);
        if (!final) this.disconnected(error);
        return { final, reason: 'refused', error };
      }
      opened = true;
      this.connected = true;
      this.emit('open', { resumed: this.opened++ > 0 });
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const reader = response.body.getReader();
      // An abort (stop, or the watchdog) ends the read in progress.
      abort.signal.addEventListener('abort', () => reader.cancel().catch(() => {}));
      let revoked = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        for (const sse of parser.push(decoder.decode(value, { stream: true }))) {
          this.lastEventId = parser.lastEventId;
          const event = parseRoomEvent(sse);
          if (!event) continue;
          if (event.type === 'access-revoked') revoked = event;
          this.emit('event', event);
          this.emit(event.type, event);
        }
      }
      if (revoked) {
        this.connected = false;
        return { final: true, reason: 'access-revoked', error: null };
      }
      this.disconnected(new DialbridgeError(0, 'network', 'the event stream ended'));
      return { opened };
    } catch (e) {
      if (!this.stopped) {
        this.disconnected(new DialbridgeError(0, 'network', e?.message || 'the event stream failed'));
      }
      return { opened };
    } finally {
      clearTimeout(watchdog);
    }
  }

  disconnected(error) {
    this.connected = false;
    this.emit('disconnected', { error });
  }
}

/** A room's event stream (`levels: true` adds the speech levels of a mixing room). */
export class RoomEvents extends EventStream {
  constructor(client, token, options = {}) {
    super(client, `${API_BASE}/rooms/${enc(token)}/events${options.levels ? '?levels=true' : ''}`, options);
    this.token = token;
  }
}

/** The signed-in user's own event stream: incoming calls, their end, missed calls. */
export class UserEvents extends EventStream {
  constructor(client, options = {}) {
    super(client, `${API_BASE}/users/me/events`, options);
  }
}

/**
 * The live state of one room for a page: its participants with each phone's state, and whether
 * that state is current. It follows the room's events and fetches everything again whenever the
 * stream (re)opens or lagged, so a lost stream never leaves a stale phone state behind.
 *
 * Events: `change` (the state), `event` (each room event), `levels` (speech levels, with the
 * option `levels: true`), `closed`.
 */
export class RoomState extends Emitter {
  constructor(client, token, options = {}) {
    super();
    /** Speech levels by attendee id: {level, at} (a mixing room's `levels` events). */
    this.levels = new Map();
    this.client = client;
    this.token = token;
    this.room = null;
    this.participants = [];
    /** Phone states by attendee id: {callId, status, cause, code, message}. */
    this.phones = new Map();
    this.inCall = [];
    this.live = false;
    /** Orders fetched state against events: each resync and each phone event takes a tick. */
    this.clock = 0;
    this.events = new RoomEvents(client, token, options);
    // The first open is followed by start()'s own fetch.
    this.events.on('open', ({ resumed }) => resumed && this.resync());
    this.events.on('lagged', () => this.resync());
    this.events.on('disconnected', () => {
      this.live = false;
      this.emit('change', this);
    });
    this.events.on('closed', (why) => {
      this.live = false;
      this.emit('closed', why);
      this.emit('change', this);
    });
    this.events.on('event', (event) => this.apply(event));
  }

  /** Opens the stream and loads the room. */
  async start() {
    await this.events.start();
    await this.resync();
    return this;
  }

  stop() {
    this.events.stop();
  }

  /** Fetches the room, its participants and the call's sessions again. */
  async resync() {
    // An event that arrives while the fetch is under way is newer than what it returns.
    const mark = ++this.clock;
    try {
      const [room, participants, inCall] = await Promise.all([
        this.client.getRoom(this.token),
        this.client.listParticipants(this.token),
        this.client.callParticipants(this.token).catch(() => []),
      ]);
      this.room = room;
      this.participants = participants;
      this.inCall = inCall;
      const phones = new Map();
      for (const p of participants) {
        if (!p.phoneNumber) continue;
        const known = this.phones.get(p.attendeeId);
        const keep =
          known && (known.at > mark || (known.callId === p.callId && known.status === p.callStatus));
        phones.set(
          p.attendeeId,
          keep ? known : { callId: p.callId ?? null, status: p.callStatus ?? null, cause: null, at: mark },
        );
      }
      this.phones = phones;
      await this.fillCauses();
      this.live = this.events.connected;
      this.emit('change', this);
    } catch (e) {
      this.emit('error', e);
    }
  }

  /** Causes of ended phone calls the stream did not tell (they ended while it was away). */
  async fillCauses() {
    const missing = [...this.phones.values()].filter(
      (p) => p.callId && (p.status === 'cleared' || p.status === 'rejected') && !p.cause,
    );
    if (missing.length === 0) return;
    let records = [];
    try {
      records = await this.client.callRecords(this.token);
    } catch {
      return;
    }
    for (const phone of missing) {
      const record = records.find((r) => r.callId === phone.callId);
      if (record) {
        phone.cause = record.cause ?? null;
        phone.code = record.sipCode ?? null;
      }
    }
  }

  apply(event) {
    if (event.type === 'levels') {
      const at = Date.now();
      for (const l of event.levels ?? []) this.levels.set(l.attendeeId, { level: l.level, at });
      this.emit('levels', this.levels);
      return;
    }
    switch (event.type) {
      case 'callstatus': {
        this.phones.set(event.attendeeId, {
          at: ++this.clock,
          callId: event.callid,
          status: event.status,
          cause: event.cause ?? null,
          code: event.code ?? null,
          message: event.message ?? null,
        });
        break;
      }
      case 'participant-joined':
      case 'participant-left':
      case 'participant-flags':
      case 'call-started':
      case 'call-ended':
        // Membership and flags come back whole from the server.
        this.resync();
        break;
      default:
        break;
    }
    this.emit('event', event);
    this.emit('change', this);
  }

  /** An attendee's speech level (0 to 1) from the last second's `levels` events, or null. */
  levelOf(attendeeId, now = Date.now()) {
    const known = this.levels.get(attendeeId);
    return known && now - known.at < 1000 ? known.level : null;
  }

  /** The phone attendees with their state. */
  phoneAttendees() {
    return this.participants
      .filter((p) => p.phoneNumber)
      .map((p) => ({ ...p, phone: this.phones.get(p.attendeeId) ?? null }));
  }
}

/** The errors `getUserMedia` raises, as DialbridgeErrors a page can show. */
export function mediaError(e) {
  const name = e && e.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new DialbridgeError(0, 'microphone-denied', 'The microphone is blocked. Allow it for this page to talk.');
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return new DialbridgeError(0, 'microphone-missing', 'No microphone was found.');
  }
  if (name === 'NotReadableError') {
    return new DialbridgeError(0, 'microphone-busy', 'The microphone is in use by another program.');
  }
  return new DialbridgeError(0, 'media', e?.message || 'The audio could not start.');
}

/** The errors `getUserMedia` raises for the camera, as DialbridgeErrors a page can show. */
export function cameraError(e) {
  const name = e && e.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return new DialbridgeError(0, 'camera-denied', 'The camera is blocked. Allow it for this page to be seen.');
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') {
    return new DialbridgeError(0, 'camera-missing', 'No camera was found.');
  }
  if (name === 'NotReadableError') {
    return new DialbridgeError(0, 'camera-busy', 'The camera is in use by another program.');
  }
  return new DialbridgeError(0, 'media', e?.message || 'The video could not start.');
}

/** Response header of a media join: `sending`, `none`, or `refused: REASON` (audio-only). */
const VIDEO_HEADER = 'X-Dialbridge-Video';

/** Remote cameras a video join asks for: the gateway's default cap of senders, less oneself. */
const DEFAULT_VIDEO_SLOTS = 3;

/** Waits until a peer connection has gathered its ICE candidates (the join sends one offer). */
function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') {
        pc.removeEventListener('icegatheringstatechange', done);
        clearTimeout(timer);
        resolve();
      }
    };
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

/**
 * The browser's media in a room's call: the peer connection, the local (microphone, camera)
 * and remote (the room's audio mix) streams, the other participants' cameras (`remoteVideos`),
 * mute, key presses, leave.
 */
export class MediaSession extends Emitter {
  constructor(client, token, pc, localStream, remoteStream, location, { video = 'none', remoteVideos = [] } = {}) {
    super();
    this.client = client;
    this.token = token;
    this.pc = pc;
    this.localStream = localStream;
    this.remoteStream = remoteStream;
    this.location = location;
    this.id = location ? location.split('/').pop() : null;
    this.muted = false;
    this.videoMuted = false;
    /** What became of this join's camera: `sending`, `none`, or `refused: REASON`. */
    this.video = video;
    /**
     * One track per slot for other participants' cameras, in the order the gateway fills them:
     * the call's video senders (the `video-senders` room event) without oneself.
     */
    this.remoteVideos = remoteVideos;
    pc.addEventListener('connectionstatechange', () => this.emit('state', pc.connectionState));
  }

  /** Whose camera each of `remoteVideos` shows, given the `video-senders` event's senders. */
  videoSenders(senders, ownSessionId) {
    const others = senders.filter((s) => s.sessionId !== ownSessionId);
    return this.remoteVideos.map((track, i) => ({ track, sender: others[i] ?? null }));
  }

  /** Turns the camera off (the track sends black) or on again. */
  setVideoMuted(muted) {
    this.videoMuted = Boolean(muted);
    for (const track of this.localStream.getVideoTracks()) track.enabled = !this.videoMuted;
    this.emit('videoMuted', this.videoMuted);
  }

  /** Mutes (or unmutes) the microphone: the track sends silence, the session stays. */
  setMuted(muted) {
    this.muted = Boolean(muted);
    for (const track of this.localStream.getAudioTracks()) track.enabled = !this.muted;
    this.emit('muted', this.muted);
  }

  /** Sends key presses into the call (RFC 4733 telephone-events from this browser). */
  sendDtmf(digits, { duration = 100, gap = 70 } = {}) {
    if (!/^[0-9*#A-D]+$/i.test(digits)) {
      throw new DialbridgeError(0, 'dtmf', `"${digits}" holds keys a keypad does not have`);
    }
    const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
    if (!sender || !sender.dtmf || !sender.dtmf.canInsertDTMF) {
      throw new DialbridgeError(0, 'dtmf', 'key presses cannot be sent on this connection');
    }
    sender.dtmf.insertDTMF(digits, duration, gap);
  }

  /** Ends the media session: the server leg, the peer connection, the microphone. */
  async leave() {
    try {
      if (this.location) await this.client.fetchOk('DELETE', new URL(this.location).pathname);
    } catch (e) {
      if (!(e instanceof DialbridgeError) || e.status !== 404) throw e;
    } finally {
      this.pc.close();
      for (const track of this.localStream.getTracks()) track.stop();
      this.emit('state', 'closed');
    }
  }
}

/** A client of one gateway, signed in with one user's token. */
export class Dialbridge {
  /**
   * @param {object} options `baseUrl` ('' = this page's origin), `token` (a user token),
   *   `fetch` (defaults to the global one).
   */
  constructor({ baseUrl = '', token = null, fetch: fetchImpl } = {}) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.fetchImpl = fetchImpl ?? ((...args) => globalThis.fetch(...args));
  }

  /** Signs in with a token: checks it with the server; the rooms the user is in. */
  async signIn(token) {
    const previous = this.token;
    this.token = token;
    try {
      return await this.listRooms();
    } catch (e) {
      this.token = previous;
      throw e;
    }
  }

  signOut() {
    this.token = null;
  }

  async fetchRaw(method, path, options = {}) {
    const { url, init } = buildRequest(this.baseUrl, this.token, method, path, options);
    if (options.signal) init.signal = options.signal;
    try {
      return await this.fetchImpl(url, init);
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new DialbridgeError(0, 'network', `The gateway could not be reached (${e?.message ?? e}).`);
    }
  }

  /** A request whose answer must be 2xx: its parsed body (the OCS `data` when enveloped). */
  async fetchOk(method, path, options = {}) {
    const response = await this.fetchRaw(method, path, options);
    const text = await response.text();
    if (!response.ok) throw errorFromResponse(response.status, text);
    if (!text) return null;
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      return text;
    }
    return body && body.ocs ? body.ocs.data : body;
  }

  talk(method, path, json) {
    return this.fetchOk(method, `${TALK_BASE}${path}`, json === undefined ? {} : { json });
  }

  own(method, path, json) {
    return this.fetchOk(method, `${API_BASE}${path}`, json === undefined ? {} : { json });
  }

  // Call links (no account).

  /**
   * A guest pass for a call link (the id in its URL `/calls/{id}`): signs this client in as a
   * guest named `name` of the link's room; `{token, roomToken, displayName, ...}`.
   */
  async joinLink(callId, name) {
    this.token = null;
    const pass = await this.fetchOk('POST', `/api/calls/${enc(callId)}/guests`, { json: { name } });
    this.token = pass.token;
    return pass;
  }

  // Rooms.

  listRooms() {
    return this.talk('GET', '/room');
  }

  /** Creates a room (type 2 group, 3 public); the caller owns it. */
  createRoom(name, { type = 2 } = {}) {
    return this.talk('POST', '/room', { roomType: type, roomName: name });
  }

  getRoom(token) {
    return this.talk('GET', `/room/${enc(token)}`);
  }

  listParticipants(token) {
    return this.talk('GET', `/room/${enc(token)}/participants`);
  }

  addUser(token, userId) {
    return this.talk('POST', `/room/${enc(token)}/participants`, { newParticipant: userId, source: 'users' });
  }

  /** Adds a phone-number attendee (E.164, e.g. +4930123456); its attendee id is needed to dial it. */
  addPhone(token, number) {
    return this.talk('POST', `/room/${enc(token)}/participants`, { newParticipant: number, source: 'phones' });
  }

  removeAttendee(token, attendeeId) {
    return this.talk('DELETE', `/room/${enc(token)}/attendees`, { attendeeId });
  }

  /** Sets (or clears, with null) the room's dial-in number and whether callers wait for its call. */
  setDialin(token, { number, waitForCall } = {}) {
    const body = { number: number ?? null };
    if (waitForCall !== undefined) body.waitForCall = waitForCall;
    return this.own('PUT', `/rooms/${enc(token)}/dialin`, body);
  }

  // The room session and the call.

  /** Enters the room: a session (its id also set as the room's session cookie). */
  joinRoom(token) {
    return this.talk('POST', `/room/${enc(token)}/participants/active`);
  }

  leaveRoom(token) {
    return this.talk('DELETE', `/room/${enc(token)}/participants/active`);
  }

  /** The sessions in the call. */
  callParticipants(token) {
    return this.talk('GET', `/call/${enc(token)}`);
  }

  /** Joins (or starts) the call with in-call flags (default: audio). */
  joinCall(token, { flags = Flags.IN_CALL | Flags.AUDIO, silent = false } = {}) {
    return this.talk('POST', `/call/${enc(token)}`, { flags, silent });
  }

  updateCall(token, flags) {
    return this.talk('PUT', `/call/${enc(token)}`, { flags });
  }

  /** Leaves the call; `all` (moderators) ends it for everyone, phones included. */
  leaveCall(token, { all = false } = {}) {
    return this.talk('DELETE', `/call/${enc(token)}`, { all });
  }

  // Audio.

  /**
   * Joins the call's media with one request (WHIP-style): the microphone (or `stream`) goes to
   * the room, the room's mix comes back as `remoteStream`. With `video`, the camera goes too and
   * `videoSlots` other cameras come back (`remoteVideos`); the gateway forwards video as it is.
   * Call `joinRoom` and `joinCall` first.
   */
  async joinMedia(
    token,
    { stream = null, audio = true, video = false, videoSlots, iceTimeoutMs = 3000, rtcConfig = {} } = {},
  ) {
    let local = stream;
    if (!local) {
      try {
        local = await navigator.mediaDevices.getUserMedia({ audio, video: false });
      } catch (e) {
        throw mediaError(e);
      }
      if (video) {
        try {
          const camera = await navigator.mediaDevices.getUserMedia({ video: true });
          for (const track of camera.getVideoTracks()) local.addTrack(track);
        } catch (e) {
          for (const track of local.getTracks()) track.stop();
          throw cameraError(e);
        }
      }
    }
    const cameras = local.getVideoTracks();
    const slots = videoSlots ?? (video || cameras.length > 0 ? DEFAULT_VIDEO_SLOTS : 0);
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...rtcConfig });
    const remote = new MediaStream();
    pc.addEventListener('track', (e) => {
      if (e.track.kind === 'audio') remote.addTrack(e.track);
    });
    try {
      for (const track of local.getAudioTracks()) pc.addTransceiver(track, { direction: 'sendrecv', streams: [local] });
      if (local.getAudioTracks().length === 0) pc.addTransceiver('audio', { direction: 'recvonly' });
      // The camera's m-line is the first slot too; the rest only receive.
      if (cameras.length > 0) pc.addTransceiver(cameras[0], { direction: 'sendrecv', streams: [local] });
      for (let i = cameras.length > 0 ? 1 : 0; i < slots; i++) pc.addTransceiver('video', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, iceTimeoutMs);
      const response = await this.fetchRaw('POST', `${API_BASE}/rooms/${enc(token)}/media`, {
        body: pc.localDescription.sdp,
        contentType: 'application/sdp',
      });
      const answer = await response.text();
      if (!response.ok) throw errorFromResponse(response.status, answer);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const location = response.headers.get('Location');
      const remoteVideos = pc
        .getTransceivers()
        .filter((t) => t.receiver.track.kind === 'video' && /recv/.test(t.currentDirection ?? ''))
        .map((t) => t.receiver.track);
      const videoAnswer = response.headers.get(VIDEO_HEADER) ?? 'none';
      return new MediaSession(this, token, pc, local, remote, location, { video: videoAnswer, remoteVideos });
    } catch (e) {
      pc.close();
      if (!stream) for (const track of local.getTracks()) track.stop();
      throw e;
    }
  }

  // Phones.

  /** Dials a phone attendee through the configured trunk: `{callid, status: 'accepted'}`. */
  dialOut(token, attendeeId, { caller, anonymous } = {}) {
    const body = {};
    if (caller !== undefined) body.caller = caller;
    if (anonymous !== undefined) body.anonymous = anonymous;
    return this.talk('POST', `/call/${enc(token)}/dialout/${enc(String(attendeeId))}`, body);
  }

  /** Ends a phone leg (BYE, or CANCEL while it rings). */
  hangUpPhone(token, callId) {
    return this.own('POST', `/rooms/${enc(token)}/phones/${enc(callId)}/hangup`);
  }

  /** Mutes a phone leg: `speaking` mutes what the phone says, `listening` what it hears. */
  mutePhone(token, callId, { speaking = false, listening = false } = {}) {
    const audio = (speaking ? 1 : 0) | (listening ? 2 : 0);
    return this.own('POST', `/rooms/${enc(token)}/phones/${enc(callId)}/mute`, { audio });
  }

  /** Sends key presses (RFC 4733) to a phone leg. */
  sendPhoneDtmf(token, callId, digits) {
    return this.own('POST', `/rooms/${enc(token)}/phones/${enc(callId)}/dtmf`, { digits });
  }

  /** The room's call records (moderators). */
  callRecords(token) {
    return this.own('GET', `/rooms/${enc(token)}/calls`);
  }

  // Events.

  /** The room's event stream (not started: call `start()`). */
  events(token, options) {
    return new RoomEvents(this, token, options);
  }

  /** The room's live state, following its events (started). */
  watchRoom(token, options) {
    return new RoomState(this, token, options).start();
  }

  /**
   * Rings users of a room on all their devices (`POST voice.call`, the seed's fields):
   * resolves to `{sentTo, callId, deliveries}`.
   */
  async voiceCall(fields) {
    const answer = await this.fetchOk('POST', `${API_BASE}/voice.call`, { json: fields });
    return answer.result;
  }

  /** `accept`, `decline`, `cancel` or `end` a voice call. */
  voiceCallAction(verb, callId) {
    return this.fetchOk('POST', `${API_BASE}/voice.call.${verb}`, { json: { callId } });
  }

  /** A voice call's status, recipients and deliveries. */
  async voiceCallInfo(callId) {
    return (await this.fetchOk('GET', `${API_BASE}/voice.call.info?callId=${enc(callId)}`)).result;
  }

  /** The gateway's VAPID public key (base64url), for `pushManager.subscribe`. */
  async vapidKey() {
    return (await this.fetchOk('GET', `${API_BASE}/push.vapid`)).publicKey;
  }

  /**
   * Registers a device for pushes: `type` apn, gcm, webpush (value: the subscription's JSON) or
   * unifiedpush (value: the endpoint URL). Web Push and UnifiedPush registrations ring only once
   * activated with `activatePush(id, activationToken)` from the message pushed through them.
   */
  async registerPush({ type, value, appName, deviceId, voip = false }) {
    return (await this.fetchOk('POST', `${API_BASE}/push.token`, { json: { type, value, appName, deviceId, voip } })).result;
  }

  activatePush(id, activationToken) {
    return this.fetchOk('POST', `${API_BASE}/push.token/activate`, { json: { id, activationToken } });
  }

  /** Removes a device by its registration id or its value. */
  unregisterPush(token) {
    return this.fetchOk('DELETE', `${API_BASE}/push.token`, { json: { token } });
  }

  /** Direct calls with a call SDK's verbs and listeners (not started: call `start()`). */
  calls(listeners, options) {
    return new CallClient(this, listeners, options);
  }
}

/** The call SDK's numeric error codes (seed 001), where one fits. */
export const CallErrorCode = Object.freeze({
  CALL_ALREADY_ENDED: 100602,
  MAX_PARTICIPANTS: 100603,
  SERVER_ERROR: 100605,
  MICROPHONE_DENIED: 100606,
  CAMERA_DENIED: 100607,
  JOIN_FAILED: 100613,
});

function callFailure(e) {
  if (e instanceof DialbridgeError) {
    const code =
      e.error === 'microphone-denied'
        ? CallErrorCode.MICROPHONE_DENIED
        : e.error === 'camera-denied'
          ? CallErrorCode.CAMERA_DENIED
          : e.status === 410
          ? CallErrorCode.CALL_ALREADY_ENDED
          : e.status >= 500 || e.status === 0
            ? CallErrorCode.SERVER_ERROR
            : e.status;
    return { statusCode: code, message: e.message, error: e };
  }
  return { statusCode: CallErrorCode.SERVER_ERROR, message: String(e?.message ?? e), error: e };
}

/**
 * Direct calls with the verbs of a call SDK (seed 001): `makeVoiceCall([jid])`, `answerCall()`,
 * `declineCall()`, `endCall()`, `muteAudio(bool)`, and the listeners `callStatusListener`,
 * `incomingCallListener`, `userTrackListener` and `missedCallListener`, passed to the
 * constructor. Each verb resolves to `{statusCode, message, ...}`; a failure resolves to the same
 * shape with the SDK's code where one fits (100606 microphone denied, 100602 call already ended)
 * or the HTTP status (403: the plan has no one-to-one calls). A call is a room: the media is the
 * room's, joined as `joinMedia` does.
 */
export class CallClient extends Emitter {
  constructor(client, listeners = {}, { deviceId, ...streamOptions } = {}) {
    super();
    this.client = client;
    this.callbacks = listeners;
    this.deviceId = deviceId ?? `device-${Math.random().toString(36).slice(2, 12)}`;
    this.events = new UserEvents(client, streamOptions);
    /** The incoming call ringing here, if any. */
    this.incoming = null;
    /** The call this client is in (its room token), if any. */
    this.roomId = null;
    /** The voice call (voice.call's callId) this client answered, if any. */
    this.voiceCallId = null;
    this.media = null;
    this.events.on('incoming-call', (call) => {
      this.incoming = call;
      this.call('incomingCallListener', call);
    });
    this.events.on('call-answered', (e) => {
      if (e.deviceId !== this.deviceId) this.stopRinging(e.roomId, 'answered elsewhere');
    });
    this.events.on('call-cancelled', (e) => this.stopRinging(e.roomId, e.reason));
    // A voice call (POST voice.call) rings here as an incoming call into its room.
    this.events.on('voice-call', (p) => {
      this.incoming = voiceIncoming(p);
      this.call('incomingCallListener', this.incoming);
    });
    this.events.on('stop-ringing', (e) => this.stopRinging(e.roomId, e.reason));
    this.events.on('missed-call', (e) => this.call('missedCallListener', e));
    /** The last status event of each call, by room: a page that shows a call later starts from it. */
    this.statuses = new Map();
    this.events.on('call-status', (e) => {
      this.statuses.set(e.roomId, e);
      this.call('callStatusListener', e);
      if (e.sessionStatus === 'closed' && e.roomId === this.roomId) this.hangUpLocally();
    });
  }

  call(listener, value) {
    const fn = this.callbacks[listener];
    if (typeof fn === 'function') {
      try {
        fn(value);
      } catch (e) {
        console.error(`dialbridge: a ${listener} failed`, e);
      }
    }
    this.emit(listener, value);
  }

  /** Starts listening for calls; resolves once the stream is open (or failed). */
  start() {
    return this.events.start();
  }

  stop() {
    this.events.stop();
  }

  stopRinging(roomId, reason) {
    if (this.incoming && this.incoming.roomId === roomId) {
      this.incoming = null;
      this.call('callStatusListener', { roomId, status: 'disconnected', reason, localUser: true, sessionStatus: 'open' });
    }
  }

  makeVoiceCall(jids) {
    return this.makeCall(jids, 'audio');
  }

  /** A video call: the camera goes to the callees, theirs come back (`userTrackListener`). */
  makeVideoCall(jids) {
    return this.makeCall(jids, 'video');
  }

  async makeCall(jids, callType) {
    try {
      const answer = await this.client.fetchOk('POST', `${API_BASE}/direct-calls`, { json: { to: jids, callType } });
      this.roomId = answer.roomId;
      this.peers = jids.length === 1 ? jids[0] : null;
      try {
        await this.joinMedia(answer.roomId, callType);
      } catch (e) {
        // Declined or busy while the media was being joined: the call is over, not failed.
        if (!(await this.closedSoon(answer.roomId))) throw e;
      }
      if (this.statuses.get(answer.roomId)?.sessionStatus === 'closed') await this.hangUpLocally();
      return answer;
    } catch (e) {
      return callFailure(e);
    }
  }

  /** Whether the call is over, or ends within `ms` (its closing status may still be on its way). */
  closedSoon(roomId, ms = 2000) {
    const closed = () => this.statuses.get(roomId)?.sessionStatus === 'closed';
    if (closed()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off();
        resolve(closed());
      }, ms);
      const off = this.on('callStatusListener', () => {
        if (!closed()) return;
        clearTimeout(timer);
        off();
        resolve(true);
      });
    });
  }

  async answerCall() {
    const call = this.incoming;
    if (!call) return { statusCode: CallErrorCode.CALL_ALREADY_ENDED, message: 'no call is ringing' };
    try {
      const answer = call.voiceCallId
        ? await this.voiceVerb('accept', call.voiceCallId, 'call answered')
        : await this.client.fetchOk('POST', `${API_BASE}/direct-calls/${enc(call.roomId)}/answer`, {
            json: { deviceId: this.deviceId },
          });
      this.voiceCallId = call.voiceCallId ?? null;
      this.incoming = null;
      this.roomId = call.roomId;
      this.peers = call.callMode === 'onetoone' ? call.userJid : null;
      await this.joinMedia(call.roomId, call.callType);
      return answer;
    } catch (e) {
      return callFailure(e);
    }
  }

  async declineCall() {
    const call = this.incoming;
    if (!call) return { statusCode: CallErrorCode.CALL_ALREADY_ENDED, message: 'no call is ringing' };
    this.incoming = null;
    try {
      if (call.voiceCallId) return await this.voiceVerb('decline', call.voiceCallId, 'call declined');
      return await this.client.fetchOk('POST', `${API_BASE}/direct-calls/${enc(call.roomId)}/decline`);
    } catch (e) {
      return callFailure(e);
    }
  }

  async endCall() {
    const roomId = this.roomId;
    if (!roomId) return { statusCode: CallErrorCode.CALL_ALREADY_ENDED, message: 'not in a call' };
    try {
      if (this.voiceCallId) return await this.voiceVerb('end', this.voiceCallId, 'call ended');
      return await this.client.fetchOk('POST', `${API_BASE}/direct-calls/${enc(roomId)}/end`);
    } catch (e) {
      return callFailure(e);
    } finally {
      await this.hangUpLocally();
    }
  }

  /** Rings more users (or dials numbers) into the call this client is in. */
  async inviteUsersToOngoingCall(jids) {
    const roomId = this.roomId;
    if (!roomId) return { statusCode: CallErrorCode.CALL_ALREADY_ENDED, message: 'not in a call' };
    try {
      return await this.client.fetchOk('POST', `${API_BASE}/direct-calls/${enc(roomId)}/invite`, { json: { to: jids } });
    } catch (e) {
      return callFailure(e);
    }
  }

  /** voice.call.accept / .decline / .end, answered in this client's `{statusCode, message}`. */
  async voiceVerb(verb, callId, message) {
    await this.client.voiceCallAction(verb, callId);
    return { statusCode: 200, message, callId };
  }

  /** A page (from 1) of the user's call log: `{statusCode, message, page, totalPages, callLogs}`. */
  async getCallLogs(page = 1) {
    try {
      return await this.client.fetchOk('GET', `${API_BASE}/direct-calls/logs?page=${enc(String(page))}`);
    } catch (e) {
      return callFailure(e);
    }
  }

  muteAudio(muted) {
    this.media?.setMuted(muted);
    return { statusCode: 200, message: muted ? 'audio muted' : 'audio unmuted' };
  }

  /** Turns the camera off (black frames) or on again. */
  muteVideo(muted) {
    this.media?.setVideoMuted(muted);
    return { statusCode: 200, message: muted ? 'video muted' : 'video unmuted' };
  }

  async joinMedia(roomId, callType = 'audio') {
    this.sessionId = (await this.client.joinRoom(roomId))?.sessionId ?? null;
    await this.client.joinCall(roomId);
    try {
      this.media = await this.client.joinMedia(roomId, { video: callType === 'video' });
    } catch (e) {
      await this.client.leaveCall(roomId).catch(() => {});
      throw e;
    }
    const me = this.callbacks.userJid ?? null;
    for (const track of this.media.localStream.getTracks()) {
      this.call('userTrackListener', { localUser: true, userJid: me, track, trackType: track.kind });
    }
    const remote = this.media.remoteStream;
    const announce = (track) =>
      this.call('userTrackListener', { localUser: false, userJid: null, track, trackType: track.kind, stream: remote });
    for (const track of remote.getTracks()) announce(track);
    this.media.pc.addEventListener('track', (e) => {
      if (e.track.kind === 'audio') announce(e.track);
    });
    // Cameras: in a one-to-one call the one slot is the other user's; in a group, whose camera
    // a slot shows is told by the room's `video-senders` event (MediaSession.videoSenders).
    for (const track of this.media.remoteVideos) {
      this.call('userTrackListener', {
        localUser: false,
        userJid: this.peers ?? null,
        track,
        trackType: 'video',
        stream: new MediaStream([track]),
      });
    }
  }

  async hangUpLocally() {
    const media = this.media;
    const roomId = this.roomId;
    this.media = null;
    this.roomId = null;
    this.voiceCallId = null;
    if (media) await media.leave().catch(() => {});
    if (roomId) await this.client.leaveRoom(roomId).catch(() => {});
  }
}

/** A voice.call ring (its push payload) as an incoming call of this client. */
export function voiceIncoming(payload) {
  return {
    voiceCallId: payload.callId,
    roomId: payload.roomId,
    userJid: payload.senderName || payload.senderId,
    callType: payload.onlyAudio === false ? 'video' : 'audio',
    status: 'calling',
    payload,
  };
}

function enc(value) {
  return encodeURIComponent(value);
}

export default Dialbridge;
