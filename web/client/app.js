// The dialbridge web client: sign in, rooms, a room's call with its phones. Built only on the SDK.
import { Dialbridge, DialbridgeError, describePhone, voiceIncoming } from '/sdk/dialbridge.js';

const TOKEN_KEY = 'dialbridge-token';
const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];

const client = new Dialbridge();
const app = {
  calls: null, // CallClient: direct calls ringing this user
  direct: null, // {roomId, peer} of the direct call this page is in
  ringtone: null,
  client,
  rooms: [],
  token: null, // the open room's token
  state: null, // RoomState of the open room
  media: null, // MediaSession while in the call's audio
  keypadPhone: null, // the phone's callId the keypad sends to, or null for the call
  meters: null,
  videoSenders: [], // the open room's video senders (its `video-senders` event)
  sessionId: null, // this page's session in the open room
};
// For integrators poking at the page and for the browser tests.
window.dialbridgeApp = app;

const $ = (id) => document.getElementById(id);

function show(section) {
  for (const id of ['sign-in', 'guest', 'rooms', 'room']) $(id).hidden = id !== section;
}

/** The call link this page was opened for (`/calls/{id}`), if any. */
const linkId = (() => {
  const match = /^\/calls\/([^/]+)$/.exec(location.pathname);
  return match ? decodeURIComponent(match[1]) : null;
})();

/** What a failure means to the person who caused it. */
function explain(error, doing) {
  if (!(error instanceof DialbridgeError)) return `${doing} failed: ${error?.message ?? error}`;
  switch (error.error) {
    case 'microphone-denied':
    case 'microphone-missing':
    case 'microphone-busy':
      return error.message;
    case 'network':
      return `${doing} failed: the gateway cannot be reached. Check your connection.`;
    default:
      break;
  }
  if (linkId && doing === 'Joining') {
    if (error.status === 404) return 'This call link does not exist, or it was deleted.';
    if (error.status === 410) return `This call cannot be joined any more: ${error.message}.`;
    if (error.status === 402) return "This call cannot be joined now: the organizer's spending limit is reached.";
  }
  switch (error.status) {
    case 401:
      return 'Your token was not accepted. Sign in again.';
    case 403:
      if (error.error === 'number') return `This number may not be called from here (${error.message}).`;
      return `You are not allowed to do that (${error.message}).`;
    case 429:
      return 'Too many attempts. Wait a moment and try again.';
    case 501:
      return 'No phone line is set up on this gateway, so phones cannot be called.';
    case 503:
      return `The phone line is busy right now (${error.message}). Try again in a moment.`;
    default:
      return `${doing} failed: ${error.message}`;
  }
}

function report(error, doing) {
  console.warn(doing, error);
  $('error-text').textContent = explain(error, doing);
  $('error').hidden = false;
  if (error instanceof DialbridgeError && error.status === 401) signOut();
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

/** Runs a user action with its button disabled; failures go to the message bar. */
async function act(button, doing, work) {
  clearError();
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (e) {
    report(e, doing);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// Sign-in.

async function signIn(token) {
  app.rooms = await client.signIn(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  startCalls();
  enablePush().catch((e) => console.info('dialbridge: no push notifications here', e));
  $('sign-out').hidden = false;
  $('who').textContent = app.rooms[0]?.actorId ? `Signed in as ${app.rooms[0].actorId}` : 'Signed in';
}

function signOut() {
  leaveRoomPage();
  app.calls?.stop();
  app.calls = null;
  hideIncoming();
  client.signOut();
  sessionStorage.removeItem(TOKEN_KEY);
  $('sign-out').hidden = true;
  $('who').textContent = '';
  show('sign-in');
  $('token').focus();
}

// Direct calls.

const REASONS = {
  declined: 'declined',
  'no answer': 'no answer',
  busy: 'busy',
  'user hangup': 'hung up',
  'answered elsewhere': 'answered on another device',
  cancelled: 'cancelled',
  // Why a voice call stopped ringing.
  answered: 'answered on another device',
  canceled: 'cancelled',
  timeout: 'no answer',
};

function notify(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

function startCalls() {
  app.calls?.stop();
  app.calls = client.calls({
    incomingCallListener: (call) => {
      $('incoming-title').textContent = `${call.userJid} is calling (${call.callType})`;
      $('incoming').hidden = false;
      startRingtone();
      $('answer').focus();
    },
    callStatusListener: (e) => {
      if (app.calls?.incoming === null && !$('incoming').hidden && e.status === 'disconnected') {
        hideIncoming();
        if (e.reason) notify(`The call stopped ringing: ${REASONS[e.reason] ?? e.reason}.`);
      }
      if (app.direct && e.roomId === app.direct.roomId) showDirectStatus(e);
    },
    missedCallListener: (e) => notify(`Missed call from ${e.userJid}.`),
  });
  app.calls.start();
}

function showDirectStatus(e) {
  const banner = $('call-banner');
  banner.hidden = false;
  const peer = app.direct.peer;
  if (e.sessionStatus === 'closed') {
    const why = e.reason ? `: ${REASONS[e.reason] ?? e.reason}` : '';
    banner.textContent = `Call with ${peer} ended${why}`;
    app.media = null;
    stopCallViews();
    renderRoom();
  } else if (!e.localUser) {
    banner.textContent = `${e.userJid}: ${e.status}`;
  }
}

function startRingtone() {
  stopRingtone();
  try {
    const context = new AudioContext();
    const gain = context.createGain();
    gain.gain.value = 0;
    gain.connect(context.destination);
    const tone = context.createOscillator();
    tone.frequency.value = 425;
    tone.connect(gain);
    tone.start();
    // One second on, three off, as a European ring.
    const timer = setInterval(() => {
      gain.gain.setValueAtTime(0.2, context.currentTime);
      gain.gain.setValueAtTime(0, context.currentTime + 1);
    }, 4000);
    gain.gain.setValueAtTime(0.2, context.currentTime);
    gain.gain.setValueAtTime(0, context.currentTime + 1);
    app.ringtone = { context, timer };
  } catch {
    app.ringtone = null;
  }
}

function stopRingtone() {
  if (!app.ringtone) return;
  clearInterval(app.ringtone.timer);
  app.ringtone.context.close().catch(() => {});
  app.ringtone = null;
}

function hideIncoming() {
  stopRingtone();
  $('incoming').hidden = true;
}

/** Shows the direct call's room with its media already joined by the call client. */
async function enterDirectCall(roomId, peer) {
  app.direct = { roomId, peer };
  location.hash = `#/room/${encodeURIComponent(roomId)}`;
}

async function callUser(jid, callType = 'audio') {
  const answer = callType === 'video' ? await app.calls.makeVideoCall([jid]) : await app.calls.makeVoiceCall([jid]);
  if (answer.statusCode !== 200) {
    throw new DialbridgeError(answer.error?.status ?? answer.statusCode, answer.error?.error ?? 'call', answer.message);
  }
  await enterDirectCall(answer.roomId, jid);
  $('call-banner').hidden = false;
  $('call-banner').textContent = `Calling ${jid}…`;
  const last = app.calls.statuses.get(answer.roomId);
  if (last) showDirectStatus(last);
}

async function answerIncoming() {
  const call = app.calls.incoming;
  hideIncoming();
  const answer = await app.calls.answerCall();
  if (answer.statusCode !== 200) {
    throw new DialbridgeError(answer.error?.status ?? 0, answer.error?.error ?? 'call', answer.message);
  }
  await enterDirectCall(call.roomId, call.userJid);
  $('call-banner').hidden = false;
  $('call-banner').textContent = `In a call with ${call.userJid}`;
}

// Ringing with the page closed: the service worker shows the call from a Web Push message.

const PUSH_DEVICE_KEY = 'dialbridge-push-device';

/** Registers the service worker and, where notifications are allowed, this browser for pushes. */
async function enablePush() {
  if (!('serviceWorker' in navigator)) return;
  const registration = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
  if (!('PushManager' in window) || Notification.permission !== 'granted') return;
  const key = await client.vapidKey();
  const subscription =
    (await registration.pushManager.getSubscription()) ??
    (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }));
  let deviceId = localStorage.getItem(PUSH_DEVICE_KEY);
  if (!deviceId) {
    deviceId = `web-${Math.random().toString(36).slice(2, 12)}`;
    localStorage.setItem(PUSH_DEVICE_KEY, deviceId);
  }
  await client.registerPush({ type: 'webpush', value: subscription.toJSON(), appName: 'dialbridge-web', deviceId });
}

/** Messages of the service worker: a subscription to confirm, a notification's answer or decline. */
function serviceWorkerMessage(event) {
  const message = event.data ?? {};
  if (message.type === 'push-activation' && client.token) {
    client.activatePush(message.id, message.activationToken).catch((e) => report(e, 'Enabling notifications'));
  } else if (message.type === 'voice-call-action' && client.token) {
    voiceCallAction(message.action, message.payload).catch((e) => report(e, 'Answering'));
  }
}

/** Answers or declines a voice call from its notification. */
async function voiceCallAction(action, payload) {
  if (!app.calls) return;
  app.calls.incoming = voiceIncoming(payload);
  if (action === 'decline') {
    hideIncoming();
    await app.calls.declineCall();
  } else {
    await answerIncoming();
  }
}

// Rooms.

async function showRooms() {
  leaveRoomPage();
  app.rooms = await client.listRooms();
  const list = $('room-list');
  list.replaceChildren(
    ...app.rooms.map((room) => {
      const li = document.createElement('li');
      const link = document.createElement('a');
      link.href = `#/room/${encodeURIComponent(room.token)}`;
      link.textContent = room.displayName || room.name;
      li.append(link);
      if (room.hasCall) li.append(tag('call in progress', 'state connected'));
      return li;
    }),
  );
  $('no-rooms').hidden = app.rooms.length > 0;
  show('rooms');
}

function tag(text, className) {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}

function button(text, onClick, { className = '', label } = {}) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (className) b.className = className;
  if (label) b.setAttribute('aria-label', label);
  b.addEventListener('click', () => onClick(b));
  return b;
}

// A room.

async function openRoom(token) {
  const direct = app.direct && app.direct.roomId === token ? app.direct : null;
  // Entering a direct call's page does not leave that call.
  if (direct) app.direct = null;
  leaveRoomPage();
  app.token = token;
  show('room');
  $('room-title').textContent = 'Loading…';
  // A direct call's client joined the room and its media already.
  if (direct) {
    app.direct = direct;
    app.media = app.calls?.media ?? null;
    if (app.media) {
      const audio = $('remote-audio');
      audio.srcObject = app.media.remoteStream;
      audio.play().catch(() => {});
      startMeters(app.media);
      showVideos(app.media);
    }
  } else {
    $('call-banner').hidden = true;
    app.sessionId = (await client.joinRoom(token))?.sessionId ?? null;
  }
  const state = await client.watchRoom(token, { levels: true });
  if (app.token !== token) {
    state.stop();
    return;
  }
  app.state = state;
  state.on('change', () => renderRoom());
  state.on('event', (e) => {
    if (e.type === 'video-senders') {
      app.videoSenders = e.senders;
      labelVideos();
    }
    if (e.type === 'recording') notify(e.active ? 'This call is being recorded.' : 'The recording stopped.');
    if (e.type === 'call-expiring') {
      const at = new Date(e.expiresAt);
      notify(`This call ends at ${at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}.`);
    }
  });
  state.on('closed', (why) => {
    if (why.reason === 'access-revoked') report(new Error('you were removed from this room'), 'Following the room');
  });
  renderRoom();
}

function leaveRoomPage() {
  if (app.direct) {
    // Leaving the page of a direct call ends the call.
    const calls = app.calls;
    app.direct = null;
    app.media = null;
    stopCallViews();
    calls?.endCall().catch(() => {});
  } else if (app.media) {
    const { token } = app;
    const media = app.media;
    app.media = null;
    stopCallViews();
    media.leave().catch(() => {});
    client.leaveCall(token).catch(() => {});
  }
  app.state?.stop();
  app.state = null;
  app.token = null;
  app.keypadPhone = null;
  app.videoSenders = [];
  app.sessionId = null;
}

function isModerator() {
  const type = app.state?.room?.participantType;
  return type === 1 || type === 2 || type === 6;
}

function renderRoom() {
  const state = app.state;
  if (!state || !state.room) return;
  $('room-title').textContent = state.room.displayName || state.room.name;
  const live = $('live');
  live.textContent = state.live ? 'live' : 'reconnecting…';
  live.className = `badge ${state.live ? 'live' : 'stale'}`;

  const inMedia = Boolean(app.media);
  $('join-call').hidden = inMedia;
  $('join-call').textContent = state.room.hasCall ? 'Join call' : 'Start call';
  $('join-video').hidden = inMedia;
  $('mute').hidden = !inMedia;
  $('camera').hidden = !(inMedia && app.media.localStream.getVideoTracks().length > 0);
  $('leave-call').hidden = !inMedia;
  $('end-call').hidden = !(inMedia && isModerator());
  $('dial').hidden = !isModerator();

  const inCall = new Set(state.inCall.map((p) => p.attendeeId));
  $('people').replaceChildren(
    ...state.participants
      .filter((p) => !p.phoneNumber)
      .map((p) => {
        const li = document.createElement('li');
        li.append(tag(p.displayName || p.actorId, 'name'));
        if (inCall.has(p.attendeeId)) {
          li.append(tag('in the call', 'state connected'));
          li.append(levelMeter(p.attendeeId, p.displayName || p.actorId));
        }
        return li;
      }),
  );

  const phones = state.phoneAttendees();
  $('phones-title').hidden = phones.length === 0 && !isModerator();
  $('phones').replaceChildren(
    ...phones.map((p) => {
      const li = document.createElement('li');
      li.dataset.attendee = String(p.attendeeId);
      li.append(tag(p.displayName || p.phoneNumber, 'name'));
      const words = describePhone(p.phone);
      const status = tag(words, `state ${p.phone?.status ?? ''}`);
      status.setAttribute('role', 'status');
      status.dataset.testid = 'phone-state';
      li.append(status);
      if (p.phone?.status === 'connected') li.append(levelMeter(p.attendeeId, p.phoneNumber));
      const actions = document.createElement('span');
      actions.className = 'actions';
      const active = p.phone && ['accepted', 'ringing', 'connected'].includes(p.phone.status);
      const number = p.phoneNumber;
      if (active) {
        actions.append(
          button('Hang up', (b) => act(b, 'Hanging up', () => client.hangUpPhone(app.token, p.phone.callId)), {
            className: 'danger',
            label: `Hang up ${number}`,
          }),
        );
        if (p.phone.status === 'connected') {
          const muted = Boolean(p.phone.muted);
          const mute = button(
            muted ? 'Unmute' : 'Mute',
            (b) =>
              act(b, 'Muting the phone', async () => {
                await client.mutePhone(app.token, p.phone.callId, { speaking: !muted });
                const stored = state.phones.get(p.attendeeId);
                if (stored) stored.muted = !muted;
                renderRoom();
              }),
            { className: 'quiet', label: `${muted ? 'Unmute' : 'Mute'} ${number}` },
          );
          mute.setAttribute('aria-pressed', String(muted));
          actions.append(mute);
          actions.append(
            button('Keypad', () => targetKeypad(p.phone.callId, number), {
              className: 'quiet',
              label: `Keypad to ${number}`,
            }),
          );
        }
      } else {
        actions.append(
          button('Call', (b) => act(b, 'Calling', () => dial(p.attendeeId)), { label: `Call ${number}` }),
        );
      }
      li.append(actions);
      return li;
    }),
  );
  if (app.keypadPhone && !phones.some((p) => p.phone?.callId === app.keypadPhone && p.phone.status === 'connected')) {
    targetKeypad(null);
  }
}

async function dial(attendeeId) {
  await client.dialOut(app.token, attendeeId);
}

/** Dials a number typed in the dial pad: its attendee if there is one, else a new one. */
async function dialNumber(raw) {
  const number = raw.replace(/[\s()-]/g, '');
  if (!/^\+[1-9][0-9]{2,14}$/.test(number)) {
    throw new DialbridgeError(0, 'number', `“${raw}” is not a phone number in international form (+ and country code)`);
  }
  let attendee = app.state.participants.find((p) => p.phoneNumber === number);
  if (!attendee) {
    attendee = await client.addPhone(app.token, number);
    await app.state.resync();
  }
  await client.dialOut(app.token, attendee.attendeeId);
}

function targetKeypad(callId, number) {
  app.keypadPhone = callId;
  $('keypad-target').textContent = callId ? `Key presses go to ${number}.` : 'Key presses go into the call.';
}

async function pressKey(key) {
  if (app.keypadPhone) {
    await client.sendPhoneDtmf(app.token, app.keypadPhone, key);
  } else if (app.media) {
    app.media.sendDtmf(key);
  } else {
    throw new DialbridgeError(0, 'dtmf', 'Join the call first to send key presses.');
  }
}

// The call's audio.

async function joinCall({ video = false } = {}) {
  const token = app.token;
  await client.joinCall(token);
  try {
    app.media = await client.joinMedia(token, { video });
  } catch (e) {
    // Nothing half-joined stays behind: no audio, no presence in the call.
    await client.leaveCall(token).catch(() => {});
    throw e;
  }
  const audio = $('remote-audio');
  audio.srcObject = app.media.remoteStream;
  audio.play().catch(() => {});
  app.media.on('state', (s) => {
    if (s === 'failed') report(new Error('the audio connection was lost'), 'The call');
  });
  startMeters(app.media);
  showVideos(app.media);
  setMuteButton(false);
  setCameraButton(false);
  renderRoom();
}

async function leaveCall({ all = false } = {}) {
  if (app.direct) {
    app.media = null;
    stopCallViews();
    await app.calls.endCall();
    renderRoom();
    return;
  }
  const media = app.media;
  app.media = null;
  stopCallViews();
  try {
    await client.leaveCall(app.token, { all });
  } finally {
    await media?.leave().catch(() => {});
    renderRoom();
  }
}

function setCameraButton(off) {
  const b = $('camera');
  b.setAttribute('aria-pressed', String(off));
  b.textContent = off ? 'Camera on' : 'Camera off';
}

// Video: this page's camera and a tile per slot of the others' cameras, shown while it plays.

function showVideos(media) {
  hideVideos();
  if (media.video.startsWith('refused')) notify(`Your camera is not shown: ${media.video.replace(/^refused:\s*/, '')}.`);
  const own = media.localStream.getVideoTracks();
  if (own.length === 0 && media.remoteVideos.length === 0) return;
  $('videos').hidden = false;
  $('local-tile').hidden = own.length === 0;
  $('local-video').srcObject = own.length ? new MediaStream(own) : null;
  const tiles = media.remoteVideos.map((track, slot) => {
    const figure = document.createElement('figure');
    figure.className = 'tile';
    figure.dataset.slot = String(slot);
    const video = document.createElement('video');
    video.className = 'remote-video';
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([track]);
    const caption = document.createElement('figcaption');
    figure.append(video, caption);
    // A slot without a sender gets no packets: its track stays muted and its tile hidden.
    const update = () => {
      figure.hidden = track.muted;
    };
    track.addEventListener('mute', update);
    track.addEventListener('unmute', update);
    update();
    return figure;
  });
  $('remote-videos').replaceChildren(...tiles);
  setCameraButton(false);
  labelVideos();
}

function labelVideos() {
  const media = app.media;
  if (!media) return;
  const slots = media.videoSenders(app.videoSenders, app.sessionId ?? app.calls?.sessionId ?? '');
  for (const figure of $('remote-videos').children) {
    const sender = slots[Number(figure.dataset.slot)]?.sender;
    const person = sender && app.state?.participants.find((p) => p.attendeeId === sender.attendeeId);
    const name = person?.displayName || sender?.actorId || app.direct?.peer || 'Camera';
    figure.querySelector('figcaption').textContent = name;
    figure.querySelector('video').setAttribute('aria-label', `${name}'s camera`);
  }
}

function hideVideos() {
  $('videos').hidden = true;
  $('local-video').srcObject = null;
  $('remote-videos').replaceChildren();
}

function stopCallViews() {
  stopMeters();
  hideVideos();
}

function setMuteButton(muted) {
  const b = $('mute');
  b.setAttribute('aria-pressed', String(muted));
  b.textContent = muted ? 'Unmute me' : 'Mute me';
}

/** A speaker's level meter, filled in by the meter timer. */
function levelMeter(attendeeId, who) {
  const meter = document.createElement('meter');
  meter.className = 'level';
  meter.min = 0;
  meter.max = 1;
  meter.value = 0;
  meter.dataset.attendee = String(attendeeId);
  meter.setAttribute('aria-label', `${who} speaking level`);
  return meter;
}

/**
 * Each speaker's level: yours from your microphone; the others' from the room's `levels`
 * events while it mixes; in a two-party call (no mix), the one other speaker is what you hear.
 */
function updateMeters(local, remote) {
  const state = app.state;
  if (!state || !state.room) return;
  const me = state.room.attendeeId;
  const meters = [...document.querySelectorAll('meter.level')];
  const others = meters.filter((m) => Number(m.dataset.attendee) !== me);
  for (const meter of meters) {
    const id = Number(meter.dataset.attendee);
    let value = 0;
    if (id === me) value = local;
    else {
      const reported = state.levelOf(id);
      if (reported !== null) value = Math.min(1, reported * 4);
      else if (others.length === 1) value = remote;
    }
    meter.value = value;
  }
}

function level(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (const x of buffer) sum += x * x;
  return Math.min(1, Math.sqrt(sum / buffer.length) * 4);
}

function startMeters(media) {
  stopMeters();
  const context = new AudioContext();
  const meter = (stream) => {
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    context.createMediaStreamSource(stream).connect(analyser);
    return analyser;
  };
  const me = meter(media.localStream);
  const call = meter(media.remoteStream);
  const buffer = new Float32Array(2048);
  context.resume().catch(() => {});
  const timer = setInterval(() => {
    updateMeters(media.muted ? 0 : level(me, buffer), level(call, buffer));
  }, 100);
  app.meters = { context, timer, call };
}

function stopMeters() {
  if (!app.meters) return;
  clearInterval(app.meters.timer);
  app.meters.context.close().catch(() => {});
  app.meters = null;
}

// Wiring.

async function route() {
  if (linkId) return;
  clearError();
  if (!client.token) {
    show('sign-in');
    return;
  }
  const voice = /^#\/voice-call\/(answer|decline)\/([^/]+)\/([^/]+)$/.exec(location.hash);
  if (voice) {
    const payload = { callId: decodeURIComponent(voice[2]), roomId: decodeURIComponent(voice[3]) };
    location.hash = '';
    await voiceCallAction(voice[1], payload).catch((e) => report(e, 'Answering'));
    return;
  }
  const match = /^#\/room\/(.+)$/.exec(location.hash);
  try {
    if (match) await openRoom(decodeURIComponent(match[1]));
    else await showRooms();
  } catch (e) {
    report(e, match ? 'Opening the room' : 'Loading your rooms');
  }
}

function wire() {
  $('sign-in-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const ok = await act(e.submitter, 'Signing in', async () => {
      await signIn($('token').value.trim());
      return true;
    });
    if (ok) {
      $('token').value = '';
      route();
    }
  });
  $('sign-out').addEventListener('click', signOut);
  $('error-close').addEventListener('click', clearError);
  $('call-user').addEventListener('submit', (e) => {
    e.preventDefault();
    act(e.submitter, 'Calling', () => callUser($('callee').value.trim()));
  });
  $('answer').addEventListener('click', (e) => act(e.currentTarget, 'Answering', answerIncoming));
  $('decline').addEventListener('click', (e) =>
    act(e.currentTarget, 'Declining', async () => {
      hideIncoming();
      await app.calls.declineCall();
    }),
  );
  $('create-room').addEventListener('submit', (e) => {
    e.preventDefault();
    act(e.submitter, 'Creating the room', async () => {
      const room = await client.createRoom($('room-name').value.trim());
      $('room-name').value = '';
      location.hash = `#/room/${encodeURIComponent(room.token)}`;
    });
  });
  $('join-call').addEventListener('click', (e) => act(e.currentTarget, 'Joining the call', () => joinCall()));
  $('join-video').addEventListener('click', (e) =>
    act(e.currentTarget, 'Joining the call', () => joinCall({ video: true })),
  );
  $('camera').addEventListener('click', () => {
    if (!app.media) return;
    app.media.setVideoMuted(!app.media.videoMuted);
    setCameraButton(app.media.videoMuted);
  });
  $('video-call').addEventListener('click', (e) => {
    if (!$('call-user').reportValidity()) return;
    act(e.currentTarget, 'Calling', () => callUser($('callee').value.trim(), 'video'));
  });
  $('leave-call').addEventListener('click', (e) => act(e.currentTarget, 'Leaving the call', () => leaveCall()));
  $('end-call').addEventListener('click', (e) =>
    act(e.currentTarget, 'Ending the call', () => leaveCall({ all: true })),
  );
  $('mute').addEventListener('click', () => {
    if (!app.media) return;
    app.media.setMuted(!app.media.muted);
    setMuteButton(app.media.muted);
  });
  $('dial').addEventListener('submit', (e) => {
    e.preventDefault();
    act(e.submitter, 'Calling', async () => {
      await dialNumber($('dial-number').value);
      $('dial-number').value = '';
    });
  });
  $('keypad').replaceChildren(
    ...KEYS.map((key) => button(key, (b) => act(b, 'Sending the key press', () => pressKey(key)), { label: `Key ${key}` })),
  );
  window.addEventListener('hashchange', route);
  navigator.serviceWorker?.addEventListener('message', serviceWorkerMessage);
  window.addEventListener('pagehide', () => leaveRoomPage());
}

/** A guest of a call link: a name, a pass, then straight into the call. */
async function joinAsGuest(name) {
  const pass = await client.joinLink(linkId, name);
  $('who').textContent = `In the call as ${pass.displayName}`;
  await openRoom(pass.roomToken);
  await joinCall();
}

async function start() {
  wire();
  if (linkId) {
    $('guest-form').addEventListener('submit', (e) => {
      e.preventDefault();
      act(e.submitter, 'Joining', () => joinAsGuest($('guest-name').value.trim()));
    });
    show('guest');
    $('guest-name').focus();
    return;
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      await signIn(saved);
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (!(e instanceof DialbridgeError && e.status === 401)) report(e, 'Signing in');
    }
  }
  await route();
}

start();
