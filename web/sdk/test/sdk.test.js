// Unit tests of the SDK's request building, error typing, event parsing and reconnection,
// against a fake fetch (no gateway). Run: node --test web/sdk/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Dialbridge,
  DialbridgeError,
  RoomEvents,
  RoomState,
  SseParser,
  buildRequest,
  describePhone,
  errorFromResponse,
  mediaError,
  parseRoomEvent,
} from '../dialbridge.js';

/** A fake fetch: answers from `routes` (`"METHOD path"` -> function(init) -> Response), records calls. */
function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init) => {
    const path = new URL(url, 'http://gw').pathname;
    calls.push({ url, path, init });
    const route = routes[`${init.method} ${path}`];
    if (!route) return new Response('not found', { status: 404 });
    return route(init, calls.length);
  };
  return { fetch, calls };
}

const ocs = (data, status = 200) =>
  new Response(JSON.stringify({ ocs: { meta: { status: 'ok', statuscode: status, message: 'OK' }, data } }), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });

const ocsError = (status, error, message) =>
  new Response(
    JSON.stringify({ ocs: { meta: { status: 'failure', statuscode: status, message }, data: { error } } }),
    { status, headers: { 'Content-Type': 'application/json' } },
  );

/** A streamed SSE body: each chunk is sent in turn; `end` closes the stream after them. */
function sseBody(chunks, { end = true } = {}) {
  const encoder = new TextEncoder();
  let cancel;
  const closed = new Promise((resolve) => {
    cancel = resolve;
  });
  const body = new ReadableStream({
    async start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      if (end) controller.close();
      else await closed;
    },
    cancel() {
      cancel();
    },
  });
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
}

const until = async (check, what) => {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
};

test('requests carry the token, the OCS header and JSON bodies', () => {
  const { url, init } = buildRequest('http://gw:8080/', 'tok', 'POST', '/api/v1/x', { json: { a: 1 } });
  assert.equal(url, 'http://gw:8080/api/v1/x');
  assert.equal(init.method, 'POST');
  assert.equal(init.headers.Authorization, 'Bearer tok');
  assert.equal(init.headers['OCS-APIRequest'], 'true');
  assert.equal(init.headers['Content-Type'], 'application/json');
  assert.equal(init.body, '{"a":1}');
  const sdp = buildRequest('', null, 'POST', '/m', { body: 'v=0', contentType: 'application/sdp' });
  assert.equal(sdp.url, '/m');
  assert.equal(sdp.init.headers.Authorization, undefined);
  assert.equal(sdp.init.headers['Content-Type'], 'application/sdp');
  assert.equal(sdp.init.body, 'v=0');
});

test('errors are typed from OCS envelopes, JSON bodies and plain text', () => {
  const e = errorFromResponse(
    403,
    JSON.stringify({ ocs: { meta: { status: 'failure', statuscode: 403, message: 'number not allowed' }, data: { error: 'allowlist' } } }),
  );
  assert.ok(e instanceof DialbridgeError);
  assert.equal(e.status, 403);
  assert.equal(e.error, 'allowlist');
  assert.equal(e.message, 'number not allowed');
  const json = errorFromResponse(402, JSON.stringify({ error: 'spending_limit_reached', message: 'Limite' }));
  assert.equal(json.error, 'spending_limit_reached');
  assert.equal(json.message, 'Limite');
  const call = errorFromResponse(403, JSON.stringify({ statusCode: 403, message: 'one-to-one calls are not available' }));
  assert.equal(call.error, 'call');
  assert.equal(call.message, 'one-to-one calls are not available');
  const text = errorFromResponse(503, 'busy\n');
  assert.equal(text.status, 503);
  assert.equal(text.error, 'http');
  assert.equal(text.message, 'busy');
  assert.equal(errorFromResponse(500, '').message, 'HTTP 500');
});

test('a failed call rejects with the status and the server message', async () => {
  const { fetch, calls } = fakeFetch({
    'POST /ocs/v2.php/apps/spreed/api/v4/call/room1/dialout/7': () => ocsError(501, 'trunk', 'no SIP trunk is configured'),
    'GET /ocs/v2.php/apps/spreed/api/v4/room': () => ocs([{ token: 'room1' }]),
  });
  const client = new Dialbridge({ baseUrl: 'http://gw', fetch });
  const rooms = await client.signIn('secret');
  assert.deepEqual(rooms, [{ token: 'room1' }]);
  await assert.rejects(client.dialOut('room1', 7), (e) => {
    assert.ok(e instanceof DialbridgeError);
    assert.equal(e.status, 501);
    assert.equal(e.error, 'trunk');
    assert.equal(e.message, 'no SIP trunk is configured');
    return true;
  });
  assert.equal(calls[1].init.headers.Authorization, 'Bearer secret');
  assert.equal(calls[1].init.body, '{}');
});

test('a refused sign-in keeps no token', async () => {
  const { fetch } = fakeFetch({
    'GET /ocs/v2.php/apps/spreed/api/v4/room': () => ocsError(401, 'auth', 'invalid token'),
  });
  const client = new Dialbridge({ fetch });
  await assert.rejects(client.signIn('wrong'), (e) => e.status === 401 && e.error === 'auth');
  assert.equal(client.token, null);
});

test('an unreachable gateway is a network error, not a bare rejection', async () => {
  const client = new Dialbridge({
    fetch: async () => {
      throw new TypeError('fetch failed');
    },
  });
  await assert.rejects(client.listRooms(), (e) => e instanceof DialbridgeError && e.status === 0 && e.error === 'network');
});

test('every API helper builds its documented request', async () => {
  const seen = [];
  const client = new Dialbridge({
    token: 't',
    fetch: async (url, init) => {
      seen.push(`${init.method} ${new URL(url, 'http://gw').pathname} ${init.body ?? ''}`);
      return ocs({});
    },
  });
  await client.createRoom('Team');
  await client.getRoom('r');
  await client.listParticipants('r');
  await client.addUser('r', 'bob');
  await client.addPhone('r', '+4930123');
  await client.removeAttendee('r', 5);
  await client.setDialin('r', { number: '+4930999', waitForCall: true });
  await client.joinRoom('r');
  await client.leaveRoom('r');
  await client.callParticipants('r');
  await client.joinCall('r');
  await client.updateCall('r', 3);
  await client.leaveCall('r', { all: true });
  await client.dialOut('r', 9, { anonymous: true });
  await client.hangUpPhone('r', 'c1');
  await client.mutePhone('r', 'c1', { speaking: true, listening: true });
  await client.sendPhoneDtmf('r', 'c1', '12#');
  await client.callRecords('r');
  const T = '/ocs/v2.php/apps/spreed/api/v4';
  assert.deepEqual(seen, [
    `POST ${T}/room {"roomType":2,"roomName":"Team"}`,
    `GET ${T}/room/r `,
    `GET ${T}/room/r/participants `,
    `POST ${T}/room/r/participants {"newParticipant":"bob","source":"users"}`,
    `POST ${T}/room/r/participants {"newParticipant":"+4930123","source":"phones"}`,
    `DELETE ${T}/room/r/attendees {"attendeeId":5}`,
    'PUT /api/v1/rooms/r/dialin {"number":"+4930999","waitForCall":true}',
    `POST ${T}/room/r/participants/active `,
    `DELETE ${T}/room/r/participants/active `,
    `GET ${T}/call/r `,
    `POST ${T}/call/r {"flags":3,"silent":false}`,
    `PUT ${T}/call/r {"flags":3}`,
    `DELETE ${T}/call/r {"all":true}`,
    `POST ${T}/call/r/dialout/9 {"anonymous":true}`,
    'POST /api/v1/rooms/r/phones/c1/hangup ',
    'POST /api/v1/rooms/r/phones/c1/mute {"audio":3}',
    'POST /api/v1/rooms/r/phones/c1/dtmf {"digits":"12#"}',
    'GET /api/v1/rooms/r/calls ',
  ]);
});

test('the SSE parser joins data lines, keeps ids and survives any chunking', () => {
  const stream =
    ': keep-alive\r\n\r\nid: 4\r\nevent: callstatus\r\ndata: {"type":"callstatus",\r\ndata: "status":"ringing"}\r\n\r\n' +
    'event: lagged\ndata: {"type":"lagged","missed":3}\n\n';
  for (let size = 1; size <= stream.length; size++) {
    const parser = new SseParser();
    const events = [];
    for (let i = 0; i < stream.length; i += size) events.push(...parser.push(stream.slice(i, i + size)));
    assert.equal(events.length, 2, `chunks of ${size}`);
    assert.deepEqual(events[0], { id: '4', event: 'callstatus', data: '{"type":"callstatus",\n"status":"ringing"}' });
    assert.equal(events[1].event, 'lagged');
    assert.equal(events[1].id, '4');
  }
});

test('room events are parsed from their JSON; malformed ones are dropped', () => {
  const event = parseRoomEvent({ id: '9', event: 'callstatus', data: '{"type":"callstatus","status":"cleared","cause":"busy"}' });
  assert.equal(event.type, 'callstatus');
  assert.equal(event.cause, 'busy');
  assert.equal(event.eventId, '9');
  assert.equal(parseRoomEvent({ id: null, data: 'not json' }), null);
  assert.equal(parseRoomEvent({ id: null, data: '[1]' }), null);
  assert.equal(parseRoomEvent({ id: null, data: '{"no":"type"}' }), null);
});

test('phone states read as words a person understands', () => {
  assert.equal(describePhone(null), 'not called');
  assert.equal(describePhone({ status: 'ringing' }), 'ringing');
  assert.equal(describePhone({ status: 'connected' }), 'connected');
  assert.equal(describePhone({ status: 'rejected', cause: 'busy' }), 'rejected: busy');
  assert.equal(describePhone({ status: 'rejected', cause: 'no-answer' }), 'rejected: no answer');
  assert.equal(describePhone({ status: 'cleared', cause: 'hangup' }), 'cleared: hung up');
  assert.equal(describePhone({ status: 'cleared', cause: 'some-new-cause' }), 'cleared: some new cause');
});

test('denied microphones become a typed error with a message', () => {
  const e = mediaError({ name: 'NotAllowedError', message: 'Permission denied' });
  assert.equal(e.error, 'microphone-denied');
  assert.match(e.message, /microphone/i);
  assert.equal(mediaError({ name: 'NotFoundError' }).error, 'microphone-missing');
});

test('the event stream reconnects, says it resumed and sends Last-Event-ID', async () => {
  const { fetch, calls } = fakeFetch({
    'GET /api/v1/rooms/r/events': (init, n) =>
      n === 1
        ? sseBody(['id: 1\nevent: callstatus\ndata: {"type":"callstatus","status":"ringing","attendeeId":3,"callid":"c"}\n\n'])
        : sseBody(['id: 2\nevent: dtmf\ndata: {"type":"dtmf","digit":"5"}\n\n'], { end: false }),
  });
  const client = new Dialbridge({ token: 't', fetch });
  const events = new RoomEvents(client, 'r', { retryMin: 5 });
  const opens = [];
  const seen = [];
  events.on('open', (o) => opens.push(o.resumed));
  events.on('event', (e) => seen.push(e.type));
  await events.start();
  await until(() => seen.length === 2, 'two events');
  events.stop();
  assert.deepEqual(opens, [false, true]);
  assert.deepEqual(seen, ['callstatus', 'dtmf']);
  assert.equal(calls[0].init.headers['Last-Event-ID'], undefined);
  assert.equal(calls[1].init.headers['Last-Event-ID'], '1');
  assert.equal(calls[1].init.headers.Authorization, 'Bearer t');
});

test('a silent stream is given up and opened again', async () => {
  const { fetch, calls } = fakeFetch({
    'GET /api/v1/rooms/r/events': () => sseBody([': hello\n\n'], { end: false }),
  });
  const client = new Dialbridge({ token: 't', fetch });
  const events = new RoomEvents(client, 'r', { retryMin: 5, staleAfter: 50 });
  let lost = 0;
  events.on('disconnected', () => lost++);
  await events.start();
  await until(() => calls.length >= 2, 'a second connection');
  events.stop();
  assert.ok(lost >= 1);
});

test('access revoked or refused ends the stream for good', async () => {
  const { fetch, calls } = fakeFetch({
    'GET /api/v1/rooms/r/events': () =>
      sseBody(['id: 7\nevent: access-revoked\ndata: {"type":"access-revoked","reason":"removed"}\n\n']),
    'GET /api/v1/rooms/gone/events': () => ocsError(404, 'room', 'no such room'),
  });
  const client = new Dialbridge({ token: 't', fetch });
  const revoked = new RoomEvents(client, 'r', { retryMin: 5 });
  const closed = new Promise((resolve) => revoked.on('closed', resolve));
  await revoked.start();
  assert.equal((await closed).reason, 'access-revoked');
  const refused = new RoomEvents(client, 'gone', { retryMin: 5 });
  const refusal = new Promise((resolve) => refused.on('closed', resolve));
  await refused.start();
  const why = await refusal;
  assert.equal(why.error.status, 404);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(calls.length, 2, 'no reconnection after a final answer');
});

test('room state shows no stale phone state after the stream was lost', async () => {
  // The phone was ringing when the first stream died; it was busy by the time the stream came back.
  let phoneStatus = 'ringing';
  const T = '/ocs/v2.php/apps/spreed/api/v4';
  const { fetch } = fakeFetch({
    [`GET ${T}/room/r`]: () => ocs({ token: 'r', name: 'Team' }),
    [`GET ${T}/room/r/participants`]: () =>
      ocs([{ attendeeId: 3, actorType: 'phones', phoneNumber: '+4930', callId: 'c', callStatus: phoneStatus }]),
    [`GET ${T}/call/r`]: () => ocs([]),
    'GET /api/v1/rooms/r/calls': () => ocs([{ callId: 'c', cause: 'busy', sipCode: 486, status: 'rejected' }]),
    'GET /api/v1/rooms/r/events': (init, n) => {
      if (n <= 4) return sseBody([]);
      return sseBody([], { end: false });
    },
  });
  const client = new Dialbridge({ token: 't', fetch });
  const state = new RoomState(client, 'r', { retryMin: 20 });
  await state.start();
  assert.equal(describePhone(state.phoneAttendees()[0].phone), 'ringing');
  phoneStatus = 'rejected';
  await until(() => state.phoneAttendees()[0].phone.status === 'rejected' && state.live, 'the resync');
  const phone = state.phoneAttendees()[0].phone;
  assert.equal(phone.cause, 'busy');
  assert.equal(describePhone(phone), 'rejected: busy');
  state.stop();
});

test('room state follows callstatus events', async () => {
  const T = '/ocs/v2.php/apps/spreed/api/v4';
  const { fetch } = fakeFetch({
    [`GET ${T}/room/r`]: () => ocs({ token: 'r' }),
    [`GET ${T}/room/r/participants`]: () => ocs([{ attendeeId: 3, phoneNumber: '+4930' }]),
    [`GET ${T}/call/r`]: () => ocs([]),
    'GET /api/v1/rooms/r/events': () =>
      sseBody(
        [
          'id: 1\nevent: callstatus\ndata: {"type":"callstatus","callid":"c","status":"cleared","cause":"hangup","code":null,"message":null,"attendeeId":3}\n\n',
        ],
        { end: false },
      ),
  });
  const client = new Dialbridge({ token: 't', fetch });
  const state = new RoomState(client, 'r');
  await state.start();
  await until(() => state.phones.get(3)?.status === 'cleared', 'the event');
  assert.equal(describePhone(state.phoneAttendees()[0].phone), 'cleared: hung up');
  state.stop();
});

test('room state keeps speech levels when asked for them, for a second', async () => {
  const T = '/ocs/v2.php/apps/spreed/api/v4';
  const { fetch, calls } = fakeFetch({
    [`GET ${T}/room/r`]: () => ocs({ token: 'r' }),
    [`GET ${T}/room/r/participants`]: () => ocs([]),
    [`GET ${T}/call/r`]: () => ocs([]),
    'GET /api/v1/rooms/r/events': () =>
      sseBody(['id: 1\nevent: levels\ndata: {"type":"levels","levels":[{"attendeeId":4,"sessionId":"s","level":0.25}]}\n\n'], {
        end: false,
      }),
  });
  const client = new Dialbridge({ token: 't', fetch });
  const state = new RoomState(client, 'r', { levels: true });
  await state.start();
  await until(() => state.levelOf(4) !== null, 'the levels event');
  assert.equal(state.levelOf(4), 0.25);
  assert.equal(state.levelOf(4, Date.now() + 1500), null, 'an old level is no level');
  assert.equal(state.levelOf(5), null);
  assert.ok(calls.some((c) => c.url.endsWith('/api/v1/rooms/r/events?levels=true')));
  state.stop();
});

test('a call link gives a guest pass that signs the client in; a closed link is a typed error', async () => {
  const { fetch, calls } = fakeFetch({
    'POST /api/calls/abc/guests': () =>
      new Response(JSON.stringify({ token: 'guest-token', roomToken: 'r', displayName: 'Dora', attendeeId: 3 }), {
        status: 201,
      }),
    'POST /api/calls/gone/guests': () =>
      new Response(JSON.stringify({ error: 'call_ended', message: 'the call has ended' }), { status: 410 }),
  });
  const client = new Dialbridge({ token: 'old', fetch });
  const pass = await client.joinLink('abc', 'Dora');
  assert.equal(pass.roomToken, 'r');
  assert.equal(client.token, 'guest-token');
  assert.equal(calls[0].init.headers.Authorization, undefined, 'a pass is asked for without credentials');
  assert.equal(calls[0].init.body, '{"name":"Dora"}');
  await assert.rejects(client.joinLink('gone', 'Dora'), (e) => e.status === 410 && e.error === 'call_ended');
  assert.equal(client.token, null);
});

test('direct calls: a refused call resolves to the SDK shape; a ring stops when another device answers', async () => {
  const { fetch, calls } = fakeFetch({
    'POST /api/v1/direct-calls': () =>
      new Response(JSON.stringify({ statusCode: 403, message: 'one-to-one calls are not available in this plan' }), {
        status: 403,
      }),
    'GET /api/v1/users/me/events': () =>
      sseBody(
        [
          'event: incoming-call\ndata: {"type":"incoming-call","roomId":"r1","userJid":"alice","callType":"audio"}\n\n',
          'event: call-answered\ndata: {"type":"call-answered","roomId":"r1","deviceId":"other"}\n\n',
          'event: missed-call\ndata: {"type":"missed-call","roomId":"r2","userJid":"carol"}\n\n',
        ],
        { end: false },
      ),
  });
  const seen = [];
  const client = new Dialbridge({ token: 't', fetch });
  const phone = client.calls(
    {
      incomingCallListener: (c) => seen.push(`incoming ${c.userJid}`),
      callStatusListener: (s) => seen.push(`status ${s.status} ${s.reason}`),
      missedCallListener: (m) => seen.push(`missed ${m.userJid}`),
    },
    { deviceId: 'mine' },
  );
  const refused = await phone.makeVoiceCall(['bob']);
  assert.equal(refused.statusCode, 403);
  assert.match(refused.message, /one-to-one/);
  assert.deepEqual(JSON.parse(calls[0].init.body), { to: ['bob'], callType: 'audio' });
  await phone.start();
  await until(() => seen.length === 3, 'three callbacks');
  phone.stop();
  assert.deepEqual(seen, ['incoming alice', 'status disconnected answered elsewhere', 'missed carol']);
  assert.equal(phone.incoming, null);
  const none = await phone.answerCall();
  assert.equal(none.statusCode, 100602);
});

test('voice calls: a ring is an incoming call, answered with voice.call.accept; a stop-ringing stops it', async () => {
  let accepted = null;
  const { fetch } = fakeFetch({
    'GET /api/v1/users/me/events': () =>
      sseBody(
        [
          'event: voice-call\ndata: {"type":"voice-call","callId":"c1","roomId":"r1","senderName":"Alice","senderId":"alice","onlyAudio":true}\n\n',
          'event: stop-ringing\ndata: {"type":"stop-ringing","callId":"c1","roomId":"r1","reason":"canceled"}\n\n',
        ],
        { end: false },
      ),
    'POST /api/v1/voice.call.accept': (init) => {
      accepted = JSON.parse(init.body);
      return new Response(JSON.stringify({ success: false, error: 'the call is already canceled', errorType: 'error-invalid-state' }), {
        status: 409,
      });
    },
  });
  const seen = [];
  const client = new Dialbridge({ token: 't', fetch });
  const phone = client.calls({
    incomingCallListener: (c) => seen.push(`incoming ${c.userJid} ${c.callType} ${c.voiceCallId}`),
    callStatusListener: (s) => seen.push(`status ${s.status} ${s.reason}`),
  });
  await phone.start();
  await until(() => seen.length === 2, 'two callbacks');
  phone.stop();
  assert.deepEqual(seen, ['incoming Alice audio c1', 'status disconnected canceled']);
  phone.incoming = { voiceCallId: 'c1', roomId: 'r1' };
  const late = await phone.answerCall();
  assert.deepEqual(accepted, { callId: 'c1' });
  assert.equal(late.statusCode, 409);
  assert.equal(late.error.error, 'error-invalid-state');
  assert.match(late.message, /already canceled/);
});
