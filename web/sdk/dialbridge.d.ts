// Types of the dialbridge JavaScript SDK (dialbridge.js).

export declare const TALK_BASE: string;
export declare const API_BASE: string;

/** In-call flags of the call API. */
export declare const Flags: {
  readonly IN_CALL: 1;
  readonly AUDIO: 2;
  readonly VIDEO: 4;
  readonly PHONE: 8;
};

export type PhoneStatusWord = 'accepted' | 'ringing' | 'connected' | 'rejected' | 'cleared';

export declare const PhoneStatus: {
  readonly ACCEPTED: 'accepted';
  readonly RINGING: 'ringing';
  readonly CONNECTED: 'connected';
  readonly REJECTED: 'rejected';
  readonly CLEARED: 'cleared';
};

/** Why a phone call ended (the `cause` of `rejected` and `cleared`). */
export type Cause =
  | 'busy'
  | 'declined'
  | 'unavailable'
  | 'invalid-number'
  | 'no-answer'
  | 'failed'
  | 'hangup'
  | 'ended'
  | 'removed'
  | 'media-timeout'
  | 'max-duration'
  | 'shutdown'
  | 'wrong-pin'
  | 'no-call'
  | (string & {});

/** Every failure of the SDK. */
export declare class DialbridgeError extends Error {
  constructor(status: number, error: string, message: string, body?: unknown);
  /** HTTP status; 0 when no answer came (network, microphone, key presses). */
  status: number;
  /**
   * The API's short error word (`auth`, `trunk`, `allowlist`...), `http` for a plain-text
   * answer, `network`, `microphone-denied`, `microphone-missing`, `microphone-busy`, `camera-denied`, `camera-missing`, `camera-busy`, `media`, `dtmf`.
   */
  error: string;
  /** The parsed answer, when there was one. */
  body: unknown;
}

export interface Room {
  id: number;
  token: string;
  type: number;
  name: string;
  displayName: string;
  participantType: number;
  attendeeId: number;
  actorType: string;
  actorId: string;
  permissions: number;
  hasCall: boolean;
  callFlag: number;
  canStartCall: boolean;
  participantFlags: number;
  sessionId: string;
  dialinNumber?: string | null;
  dialinPin?: string | null;
  [field: string]: unknown;
}

export interface Participant {
  attendeeId: number;
  actorType: string;
  actorId: string;
  displayName: string;
  participantType: number;
  permissions: number;
  attendeePermissions: number;
  inCall: number;
  lastPing: number;
  sessionIds: string[];
  phoneNumber?: string;
  callId?: string;
  callStatus?: PhoneStatusWord;
}

export interface CallParticipant {
  attendeeId: number;
  actorType: string;
  actorId: string;
  displayName: string;
  lastPing: number;
  sessionId: string;
  inCall: number;
}

export interface CallRecord {
  id: number;
  kind: string;
  attendeeId: number | null;
  number: string;
  trunk: string | null;
  callId: string;
  startedAt: number;
  answeredAt: number | null;
  endedAt: number | null;
  billableSeconds: number;
  status: string;
  cause: Cause | null;
  sipCode: number | null;
}

/** A room event, as the event stream delivers it. */
export type RoomEvent =
  | { type: 'participant-joined'; attendeeId: number; actorType: string; actorId: string; displayName: string; sessionId: string; eventId?: string }
  | { type: 'participant-left'; attendeeId: number; actorType: string; actorId: string; sessionId: string; eventId?: string }
  | { type: 'participant-flags'; attendeeId: number; actorType: string; actorId: string; sessionId: string; inCall: number; eventId?: string }
  | { type: 'call-started'; silent: boolean; actorType: string; actorId: string; eventId?: string }
  | { type: 'call-ended'; all: boolean; eventId?: string }
  | { type: 'dtmf'; attendeeId: number; actorType: string; actorId: string; sessionId: string; digit: string; eventId?: string }
  | { type: 'ring'; attendeeId: number; actorId: string; callerActorType: string; callerActorId: string; callerDisplayName: string; eventId?: string }
  | {
      type: 'callstatus';
      callid: string;
      status: PhoneStatusWord;
      cause: Cause | null;
      code: number | null;
      message: string | null;
      attendeeId: number;
      eventId?: string;
    }
  | { type: 'access-revoked'; reason: string; eventId?: string }
  | { type: 'levels'; levels: { attendeeId: number; sessionId: string; level: number }[]; eventId?: string }
  | { type: 'video-senders'; senders: VideoSender[]; eventId?: string }
  | { type: 'lagged'; missed: number; eventId?: string };

export type Unsubscribe = () => void;

/** The state of one phone leg. */
export interface PhoneState {
  callId: string | null;
  status: PhoneStatusWord | null;
  cause: Cause | null;
  code?: number | null;
  message?: string | null;
}

/** A hangup cause in words a person understands (`no-answer` -> `no answer`). */
export declare function describeCause(cause: Cause | null | undefined): string;
/** A phone's state in words: `ringing`, `connected`, `rejected: busy`, `cleared: hung up`. */
export declare function describePhone(phone: PhoneState | null | undefined): string;

export interface RequestOptions {
  json?: unknown;
  body?: BodyInit;
  contentType?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** One request, built (pure). */
export declare function buildRequest(
  baseUrl: string,
  token: string | null,
  method: string,
  path: string,
  options?: RequestOptions,
): { url: string; init: RequestInit & { headers: Record<string, string> } };

/** The typed error of a failed HTTP answer. */
export declare function errorFromResponse(status: number, text: string): DialbridgeError;
/** A `getUserMedia` failure as a typed error. */
export declare function mediaError(e: unknown): DialbridgeError;
/** The errors `getUserMedia` raises for the camera, as DialbridgeErrors. */
export declare function cameraError(e: unknown): DialbridgeError;

/** Incremental Server-Sent Events parser. */
export declare class SseParser {
  lastEventId: string | null;
  push(text: string): { id: string | null; event: string; data: string }[];
}

export declare function parseRoomEvent(sse: { id: string | null; data: string }): RoomEvent | null;

export interface StreamOptions {
  /** First reconnection delay in ms (doubles up to retryMax). Default 500. */
  retryMin?: number;
  /** Longest reconnection delay in ms. Default 10000. */
  retryMax?: number;
  /** A stream silent for this long (ms) is treated as lost. Default 40000 (the server's keep-alive is 15 s). */
  staleAfter?: number;
  /** Also receive `levels` events (speech levels of a mixing room's participants). Default false. */
  levels?: boolean;
}

interface RoomEventsMap {
  open: { resumed: boolean };
  event: RoomEvent;
  disconnected: { error: DialbridgeError };
  closed: { reason: 'access-revoked' | 'refused'; error: DialbridgeError | null };
  [type: string]: unknown;
}

/** A room's event stream with reconnection. */
export declare class RoomEvents {
  readonly token: string;
  readonly connected: boolean;
  readonly lastEventId: string | null;
  on<K extends keyof RoomEventsMap>(type: K, listener: (value: RoomEventsMap[K]) => void): Unsubscribe;
  off(type: string, listener: (value: unknown) => void): void;
  /** Connects (and keeps reconnecting); resolves once the first attempt opened or failed. */
  start(): Promise<void>;
  stop(): void;
}

/** The live state of one room: participants, phone states, and whether it is current. */
export declare class RoomState {
  readonly token: string;
  readonly room: Room | null;
  readonly participants: Participant[];
  readonly phones: Map<number, PhoneState>;
  readonly inCall: CallParticipant[];
  /** False while the event stream is away: what is shown may be stale until it is back. */
  readonly live: boolean;
  readonly events: RoomEvents;
  /** Speech levels by attendee id, with when they came (ms since the epoch). */
  readonly levels: Map<number, { level: number; at: number }>;
  /** An attendee's speech level (0 to 1) from the last second, or null. */
  levelOf(attendeeId: number, now?: number): number | null;
  on(type: 'change', listener: (state: RoomState) => void): Unsubscribe;
  on(type: 'levels', listener: (levels: Map<number, { level: number; at: number }>) => void): Unsubscribe;
  on(type: 'event', listener: (event: RoomEvent) => void): Unsubscribe;
  on(type: 'closed', listener: (why: RoomEventsMap['closed']) => void): Unsubscribe;
  on(type: 'error', listener: (error: DialbridgeError) => void): Unsubscribe;
  start(): Promise<RoomState>;
  stop(): void;
  /** Fetches room, participants and call sessions again (done on every reconnection). */
  resync(): Promise<void>;
  phoneAttendees(): (Participant & { phone: PhoneState | null })[];
}

/** A participant whose camera the call forwards (the `video-senders` room event). */
export interface VideoSender {
  attendeeId: number;
  actorType: string;
  actorId: string;
  sessionId: string;
}

/** The browser's media in a room's call. */
export declare class MediaSession {
  readonly id: string | null;
  readonly location: string | null;
  readonly pc: RTCPeerConnection;
  /** Microphone, and camera when joined with video. */
  readonly localStream: MediaStream;
  /** The room's audio mix (or the other participant, in a two-party room). */
  readonly remoteStream: MediaStream;
  /** What became of the camera: `sending`, `none`, or `refused: REASON` (the join is audio-only). */
  readonly video: string;
  /** One track per slot for other participants' cameras, filled in the order of the call's video senders without oneself. */
  readonly remoteVideos: MediaStreamTrack[];
  readonly muted: boolean;
  readonly videoMuted: boolean;
  on(type: 'state', listener: (state: RTCPeerConnectionState | 'closed') => void): Unsubscribe;
  on(type: 'muted', listener: (muted: boolean) => void): Unsubscribe;
  on(type: 'videoMuted', listener: (muted: boolean) => void): Unsubscribe;
  setMuted(muted: boolean): void;
  /** Camera off (black frames) or on again. */
  setVideoMuted(muted: boolean): void;
  /** Whose camera each of `remoteVideos` shows, given the latest `video-senders` senders. */
  videoSenders(senders: VideoSender[], ownSessionId: string): { track: MediaStreamTrack; sender: VideoSender | null }[];
  /** Key presses into the call (RFC 4733), e.g. `"12#"`. */
  sendDtmf(digits: string, options?: { duration?: number; gap?: number }): void;
  leave(): Promise<void>;
}

export interface JoinMediaOptions {
  /** Send this stream instead of asking for the microphone. */
  stream?: MediaStream | null;
  /** `getUserMedia` audio constraints. Default true. */
  audio?: boolean | MediaTrackConstraints;
  /** Send the camera too (error `camera-denied`, `camera-missing`, `camera-busy` when it cannot). Default false. */
  video?: boolean;
  /** Other participants' cameras to receive. Default 3 with video (or a stream with a video track), else 0. */
  videoSlots?: number;
  /** Longest wait for ICE gathering before the offer goes out, ms. Default 3000. */
  iceTimeoutMs?: number;
  rtcConfig?: RTCConfiguration;
}

export interface ClientOptions {
  /** The gateway's origin; '' (default) is the page's own. */
  baseUrl?: string;
  /** A user token (`dialbridge user add` prints one). */
  token?: string | null;
  fetch?: typeof fetch;
}

/** A client of one gateway. Every method rejects with a DialbridgeError. */
export declare class Dialbridge {
  constructor(options?: ClientOptions);
  baseUrl: string;
  token: string | null;
  /** Checks the token with the server; resolves to the user's rooms. */
  signIn(token: string): Promise<Room[]>;
  signOut(): void;
  fetchRaw(method: string, path: string, options?: RequestOptions): Promise<Response>;
  fetchOk<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;

  /** A guest pass for a call link (`/calls/{id}`); the client is signed in with it. */
  joinLink(
    callId: string,
    name: string,
  ): Promise<{
    token: string;
    callId: string;
    roomToken: string;
    attendeeId: number;
    displayName: string;
    moderator: boolean;
    expiresAt: string;
  }>;

  listRooms(): Promise<Room[]>;
  createRoom(name: string, options?: { type?: 2 | 3 }): Promise<Room>;
  getRoom(token: string): Promise<Room>;
  listParticipants(token: string): Promise<Participant[]>;
  addUser(token: string, userId: string): Promise<Participant>;
  /** Adds a phone attendee (E.164); dial it with its attendeeId. */
  addPhone(token: string, number: string): Promise<Participant>;
  removeAttendee(token: string, attendeeId: number): Promise<unknown>;
  setDialin(token: string, options: { number: string | null; waitForCall?: boolean }): Promise<unknown>;

  joinRoom(token: string): Promise<Room>;
  leaveRoom(token: string): Promise<unknown>;
  callParticipants(token: string): Promise<CallParticipant[]>;
  joinCall(token: string, options?: { flags?: number; silent?: boolean }): Promise<unknown>;
  updateCall(token: string, flags: number): Promise<unknown>;
  leaveCall(token: string, options?: { all?: boolean }): Promise<unknown>;

  joinMedia(token: string, options?: JoinMediaOptions): Promise<MediaSession>;

  dialOut(
    token: string,
    attendeeId: number,
    options?: { caller?: string; anonymous?: boolean },
  ): Promise<{ callid: string; status: 'accepted' }>;
  hangUpPhone(token: string, callId: string): Promise<unknown>;
  mutePhone(token: string, callId: string, mute: { speaking?: boolean; listening?: boolean }): Promise<unknown>;
  sendPhoneDtmf(token: string, callId: string, digits: string): Promise<{ callid: string; digits: string }>;
  callRecords(token: string): Promise<CallRecord[]>;

  events(token: string, options?: StreamOptions): RoomEvents;
  /** Rings users of a room on all their devices (`POST voice.call`, the seed's fields). */
  voiceCall(fields: VoiceCallFields): Promise<{
    sentTo: Record<string, string>;
    callId: string;
    deliveries: PushDelivery[];
  }>;
  voiceCallAction(verb: 'accept' | 'decline' | 'cancel' | 'end', callId: string): Promise<{ success: true }>;
  voiceCallInfo(callId: string): Promise<{
    callId: string;
    roomId: string;
    senderId: string;
    userIds: string[];
    status: 'calling' | 'accepted' | 'declined' | 'canceled' | 'missed' | 'ended';
    reason: 'answered' | 'declined' | 'canceled' | 'timeout' | 'restart' | null;
    createdAt: number;
    endedAt: number | null;
    deliveries: PushDelivery[];
  }>;
  /** The gateway's VAPID public key (base64url), `applicationServerKey` of `pushManager.subscribe`. */
  vapidKey(): Promise<string>;
  /** Web Push and UnifiedPush registrations ring once activated (see `activatePush`). */
  registerPush(device: {
    type: 'apn' | 'gcm' | 'webpush' | 'unifiedpush';
    value: string | PushSubscriptionJSON;
    appName: string;
    deviceId?: string;
    voip?: boolean;
  }): Promise<{ id: string; type: string; appName: string; deviceId: string; voip: boolean; activated: boolean }>;
  activatePush(id: string, activationToken: string): Promise<{ success: true }>;
  /** By the registration's id or its value. */
  unregisterPush(token: string): Promise<{ success: true }>;
  /** Direct calls (not started: call `start()`). */
  calls(listeners?: CallListeners, options?: StreamOptions & { deviceId?: string }): CallClient;
  watchRoom(token: string, options?: StreamOptions): Promise<RoomState>;
}

export default Dialbridge;

/** `POST voice.call`'s fields (seed 000). */
export interface VoiceCallFields {
  roomUrl: string;
  senderName: string;
  senderGroup?: string;
  serverName: string;
  notificationMessage: string;
  userIds?: string[];
  userNames?: string[];
  /** A room token: the caller and the recipients are its attendees. */
  roomId: string;
  additionalInfo?: Record<string, unknown> | string;
  onlyAudio: boolean;
  senderId?: string;
  notificationType?: string;
}

/** One push to one device. */
export interface PushDelivery {
  userId: string;
  deviceId: string | null;
  transport: 'apn' | 'gcm' | 'webpush' | 'unifiedpush' | null;
  result: 'sent' | 'no_device' | 'failed' | 'gone';
}

/** A voice.call ring as an incoming call of a `CallClient`. */
export interface VoiceIncoming {
  voiceCallId: string;
  roomId: string;
  /** The sender's name. */
  userJid: string;
  callType: 'audio' | 'video';
  status: 'calling';
  payload: Record<string, unknown>;
}

export declare function voiceIncoming(payload: Record<string, unknown>): VoiceIncoming;

/** A call SDK answer: `{statusCode, message, ...}`. */
export interface CallAnswer {
  statusCode: number;
  message: string;
  callType?: 'audio' | 'video';
  roomId?: string;
  error?: DialbridgeError;
  [field: string]: unknown;
}

export interface CallListeners {
  callStatusListener?: (status: {
    roomId: string;
    status: string;
    userJid?: string;
    localUser: boolean;
    sessionStatus: 'open' | 'closed';
    usersStatus?: { userJid: string; status: string }[];
    reason?: string | null;
  }) => void;
  /** A direct call's ring, or a voice call's (`VoiceIncoming`, with `voiceCallId`). */
  incomingCallListener?: (call: VoiceIncoming | {
    allUsers: string[];
    callTime: number;
    callType: 'audio' | 'video';
    groupId: string | null;
    localUser: boolean;
    roomId: string;
    roomLink: string;
    status: string;
    toUsers: string[];
    userDetails: { userJid: string; displayName: string }[];
    userJid: string;
    usersStatus: { userJid: string; status: string }[];
    from: string;
    to: string;
    callMode: 'onetoone' | 'onetomany';
  }) => void;
  userTrackListener?: (track: {
    localUser: boolean;
    userJid: string | null;
    track: MediaStreamTrack;
    trackType: string;
    stream?: MediaStream;
  }) => void;
  missedCallListener?: (missed: {
    roomId: string;
    isOneToOneCall: boolean;
    userJid: string;
    groupId: string | null;
    callType: 'audio' | 'video';
    userList: string[];
    callTime: number;
  }) => void;
  /** This user's id, reported with the local tracks. */
  userJid?: string;
}

/** The call SDK's error codes. */
export declare const CallErrorCode: {
  readonly CALL_ALREADY_ENDED: 100602;
  readonly MAX_PARTICIPANTS: 100603;
  readonly SERVER_ERROR: 100605;
  readonly MICROPHONE_DENIED: 100606;
  readonly CAMERA_DENIED: 100607;
  readonly JOIN_FAILED: 100613;
};

/** Direct calls with the verbs of a call SDK (seed 001). */
export declare class CallClient {
  readonly deviceId: string;
  readonly incoming: Parameters<NonNullable<CallListeners['incomingCallListener']>>[0] | null;
  readonly roomId: string | null;
  readonly media: MediaSession | null;
  /** The last call-status event of each call, by room id. */
  readonly statuses: Map<string, Parameters<NonNullable<CallListeners['callStatusListener']>>[0]>;
  start(): Promise<void>;
  stop(): void;
  makeVoiceCall(jids: string[]): Promise<CallAnswer>;
  /** Audio and camera both ways (100607 when the camera is denied). */
  makeVideoCall(jids: string[]): Promise<CallAnswer>;
  answerCall(): Promise<CallAnswer>;
  declineCall(): Promise<CallAnswer>;
  endCall(): Promise<CallAnswer>;
  muteAudio(muted: boolean): CallAnswer;
  muteVideo(muted: boolean): CallAnswer;
  /** Rings more users (ids, or phone numbers) into the call in progress: the call becomes one-to-many. */
  inviteUsersToOngoingCall(jids: string[]): Promise<CallAnswer>;
  getCallLogs(page?: number): Promise<CallAnswer>;
}

/** The user's own event stream (incoming calls and their end, statuses, missed calls). */
export declare class UserEvents extends RoomEvents {}
