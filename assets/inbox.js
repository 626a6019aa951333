'use strict';
// The inbox: a socket.io-client on /notifications. It keeps the position of
// the last event it saw and sends it back as auth.lastEventId when it
// reconnects, so nothing is missed across a dropped connection.
(() => {
  const $ = (id) => document.getElementById(id);
  const items = new Map(); // id -> notification with readAt
  let lastEventId = null;
  let socket = null;

  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  let token = fromHash || sessionStorage.getItem('herald.token');

  function setStatus(text, kind) {
    $('status').textContent = text;
    $('status').className = `status ${kind || ''}`;
  }

  function setCount(count) {
    $('unread-count').textContent = String(count);
    $('unread-count').classList.toggle('zero', count === 0);
    document.title = count ? `(${count}) herald · inbox` : 'herald · inbox';
  }

  function when(iso) {
    const at = new Date(iso);
    return at.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  function render() {
    const list = $('list');
    list.replaceChildren();
    const sorted = [...items.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    if (!sorted.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'Nothing here yet.';
      list.append(li);
    }
    for (const n of sorted) {
      const li = document.createElement('li');
      li.className = `item${n.readAt ? '' : ' unread'}`;
      li.dataset.id = n.id;
      const dot = document.createElement('span');
      dot.className = 'dot';
      const body = document.createElement('div');
      const title = document.createElement('div');
      title.className = 'title';
      title.textContent = n.title;
      if (n.importance === 'high' || n.importance === 'urgent') {
        const tag = document.createElement('span');
        tag.className = `tag ${n.importance}`;
        tag.textContent = n.importance;
        title.append(tag);
      }
      const message = document.createElement('div');
      message.className = 'message';
      message.textContent = n.message;
      body.append(title, message);
      const time = document.createElement('time');
      time.dateTime = n.createdAt;
      time.textContent = when(n.createdAt);
      li.append(dot, body, time);
      li.addEventListener('click', () => markRead(n.id));
      list.append(li);
    }
    const unread = sorted.filter((n) => !n.readAt).length;
    $('summary').textContent = `${sorted.length} notification${sorted.length === 1 ? '' : 's'}, ${unread} unread`;
  }

  async function markRead(id) {
    const n = items.get(id);
    if (!n || n.readAt) return;
    const ack = await socket.timeout(5000).emitWithAck('mark.read', { notificationId: id }).catch(() => null);
    if (ack && ack.success) {
      n.readAt = ack.readAt;
      render();
    }
  }

  function connect() {
    $('login').hidden = true;
    $('inbox').hidden = false;
    setStatus('connecting…');
    socket = io('/notifications', {
      // A function, so every reconnect sends the latest position.
      auth: (cb) => cb({ token, lastEventId }),
    });
    socket.on('connect_error', (err) => {
      setStatus(`refused: ${err.message}`, 'error');
      if (['missing_token', 'invalid_token', 'token_expired', 'user_not_found', 'user_inactive'].includes(err.message)) {
        sessionStorage.removeItem('herald.token');
        socket.close();
        $('login').hidden = false;
        $('inbox').hidden = true;
      }
    });
    socket.on('disconnect', () => {
      socket.synced = false;
      setStatus('reconnecting…');
    });
    socket.on('sync:reset', () => { items.clear(); render(); });
    socket.on('notification:new', (n) => {
      if (!items.has(n.id)) items.set(n.id, { ...n, readAt: null });
      if (n.eventId && socket.synced) lastEventId = n.eventId;
      render();
    });
    socket.on('notification:read', ({ notificationId, readAt, eventId }) => {
      const n = items.get(notificationId);
      if (n) n.readAt = readAt;
      lastEventId = eventId;
      render();
    });
    socket.on('notification:retracted', ({ notificationId, eventId }) => {
      items.delete(notificationId);
      lastEventId = eventId;
      render();
    });
    socket.on('notification:count', ({ count }) => setCount(count));
    socket.on('session:expired', () => setStatus('session expired', 'error'));
    socket.on('connection:success', async (hello) => {
      socket.synced = true;
      lastEventId = hello.lastEventId;
      $('user-name').textContent = hello.userName;
      setCount(hello.unreadCount);
      setStatus('live', 'connected');
      if (!document.body.dataset.push) offerPush();
      // History, read ones included; live events keep it current from here.
      const page = await socket.timeout(5000).emitWithAck('notifications.list', { limit: 50 }).catch(() => null);
      if (page && page.success) {
        for (const n of page.items) items.set(n.id, n);
        render();
      }
    });
  }

  // Browser notifications, when the operator configured Web Push: the
  // control appears once herald says it has a key, and subscribes this
  // browser through the service worker at /sw.js.
  function pushStatus(text, kind) {
    $('push-status').hidden = !text;
    $('push-status').textContent = text || '';
    $('push-status').className = `push-status ${kind || ''}`;
  }

  function keyBytes(base64url) {
    const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  // Says on <body data-push> what the page decided: unsupported, off
  // (herald has no key), offered, or on.
  async function offerPush() {
    const decided = (state) => { document.body.dataset.push = state; };
    if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
      decided('unsupported');
      return;
    }
    const answer = await fetch('/api/push/public-key').catch(() => null);
    if (!answer || !answer.ok) {
      decided('off'); // push_disabled
      return;
    }
    const { publicKey } = await answer.json();
    const registration = await navigator.serviceWorker.getRegistration('/');
    const current = registration && await registration.pushManager.getSubscription().catch(() => null);
    if (current && Notification.permission === 'granted') {
      pushStatus('Notifications on');
      decided('on');
      return;
    }
    $('enable-push').dataset.key = publicKey;
    $('enable-push').hidden = false;
    decided('offered');
  }

  async function enablePush() {
    try {
      if (await Notification.requestPermission() !== 'granted') {
        pushStatus('Notifications are blocked in this browser', 'error');
        return;
      }
      const registration = await navigator.serviceWorker.register('/sw.js');
      await navigator.serviceWorker.ready;
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes($('enable-push').dataset.key),
      });
      const answer = await fetch('/api/push/subscriptions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify(subscription.toJSON()),
      });
      if (!answer.ok) {
        const { error } = await answer.json().catch(() => ({ error: {} }));
        throw new Error(error.message || `herald answered ${answer.status}`);
      }
      $('enable-push').hidden = true;
      pushStatus('Notifications on');
    } catch (error) {
      pushStatus(`Could not turn notifications on: ${error.message}`, 'error');
    }
  }

  $('enable-push').addEventListener('click', enablePush);

  $('mark-all').addEventListener('click', async () => {
    const ack = await socket.timeout(5000).emitWithAck('mark.all_read', {}).catch(() => null);
    if (ack && ack.success) {
      for (const n of items.values()) n.readAt = n.readAt || new Date().toISOString();
      render();
    }
  });

  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    token = $('token').value.trim();
    sessionStorage.setItem('herald.token', token);
    connect();
  });

  if (fromHash) {
    sessionStorage.setItem('herald.token', fromHash);
    history.replaceState(null, '', location.pathname); // keep the token out of the address bar
  }
  if (token) connect(); else $('login').hidden = false;
})();
