'use strict';
// The inbox's service worker, served at /sw.js: it shows the notifications
// herald pushes to a browser with no tab open, opens the notification's
// actionUrl (or the inbox) on a click, and closes a shown notification when
// herald sends a dismiss for it (it was read elsewhere, or retracted).
//
// A push is {"type": "notification", "notification": {...}} or
// {"type": "dismiss", "notificationId"}; the notification's id is the tag,
// so a dismiss finds what it closes.

// Only http(s) addresses are opened; anything else opens the inbox.
function destination(actionUrl) {
  try {
    const url = new URL(actionUrl || '/', self.location.origin);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : '/';
  } catch {
    return '/';
  }
}

self.addEventListener('push', (event) => {
  let push = null;
  try {
    push = event.data ? event.data.json() : null;
  } catch {
    // Not JSON: not from herald.
  }
  if (push && push.type === 'notification' && push.notification) {
    const n = push.notification;
    event.waitUntil(self.registration.showNotification(String(n.title || 'herald'), {
      body: n.message == null ? '' : String(n.message),
      tag: String(n.id),
      timestamp: Date.parse(n.createdAt) || Date.now(),
      requireInteraction: n.importance === 'urgent',
      data: { id: n.id, url: destination(n.actionUrl) },
    }));
  } else if (push && push.type === 'dismiss' && push.notificationId) {
    event.waitUntil(self.registration.getNotifications({ tag: String(push.notificationId) })
      .then((shown) => shown.forEach((n) => n.close())));
  }
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || '/';
  event.waitUntil(self.clients.openWindow(url));
});

// A new version takes over at once rather than after every tab closes.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
