// The web client's service worker: rings with a notification when a voice call's Web Push
// message arrives while no page of the client is open, and stops it when the call stops ringing.
// Browsers require every push to show a notification, so each message shows or replaces one.

const ANSWER = 'answer';
const DECLINE = 'decline';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch {
    message = {};
  }
  event.waitUntil(handle(message));
});

async function pages() {
  return self.clients.matchAll({ type: 'window', includeUncontrolled: true });
}

async function handle(message) {
  const open = await pages();
  // An open page confirms a new subscription itself (it holds the credentials).
  if (message.type === 'activation') {
    for (const page of open) page.postMessage({ type: 'push-activation', id: message.id, activationToken: message.activationToken });
    if (open.length === 0) await self.registration.showNotification('Calls will ring here', { tag: 'activation' });
    return;
  }
  if (!message.callId) return;
  // One notification per call (its tag): a cancel replaces the ring.
  if (message.notificationType === 'callCancel') {
    const words = { answered: 'Answered on another device', declined: 'Declined', canceled: 'Missed call', timeout: 'Missed call' };
    // The same tag replaces the ring. Closing it first would race: the browser names a tagged
    // notification by its tag, so the close may land after, and remove, the replacement.
    await self.registration.showNotification(`${words[message.reason] ?? 'Call ended'}: ${message.senderName ?? ''}`.trim(), {
      tag: message.callId,
      body: message.serverName ?? '',
      silent: true,
      data: message,
    });
    return;
  }
  // A page that is open rings itself from its event stream.
  if (open.some((page) => page.visibilityState === 'visible')) return;
  await self.registration.showNotification(`${message.senderName ?? 'Someone'} is calling`, {
    tag: message.callId,
    body: message.message ?? '',
    requireInteraction: true,
    renotify: true,
    data: message,
    actions: [
      { action: ANSWER, title: 'Answer' },
      { action: DECLINE, title: 'Decline' },
    ],
  });
}

self.addEventListener('notificationclick', (event) => {
  const call = event.notification.data ?? {};
  event.notification.close();
  if (!call.callId || call.notificationType === 'callCancel') {
    event.waitUntil(self.clients.openWindow('/'));
    return;
  }
  const action = event.action === DECLINE ? DECLINE : ANSWER;
  // The page (signed in) answers or declines: it holds the credentials.
  const url = `/#/voice-call/${action}/${encodeURIComponent(call.callId)}/${encodeURIComponent(call.roomId)}`;
  event.waitUntil(
    (async () => {
      const open = await pages();
      if (open.length > 0) {
        open[0].postMessage({ type: 'voice-call-action', action, payload: call });
        await open[0].focus();
      } else {
        await self.clients.openWindow(url);
      }
    })(),
  );
});
