'use strict';
// The inbox: a socket.io-client on /notifications. It keeps the position of
// the last event it saw and sends it back as auth.lastEventId when it
// reconnects, so nothing is missed across a dropped connection.
(() => {
  const $ = (id) => document.getElementById(id);

  // The line an empty list shows instead of items.
  function emptyLine(text) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = text;
    return li;
  }

  const items = new Map(); // id -> notification with readAt, of the open tab
  let lastEventId = null;
  let socket = null;

  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  let token = fromHash || sessionStorage.getItem('herald.token');

  // The tabs: what notifications.list is asked for, and which count the
  // label shows: the unread count, the tab's view (watched with
  // counts.watch under the tab's name, with the list's filters), or none
  // (snoozed and archived ones are never counted).
  const TABS = [
    { name: 'all', label: 'All', list: {}, count: 'unread' },
    { name: 'unread', label: 'Unread', list: { unreadOnly: true }, count: 'unread' },
    { name: 'mentions', label: 'Mentions', list: { kinds: ['mention.*'] }, count: 'view' },
    { name: 'urgent', label: 'Urgent', list: { importance: ['urgent', 'high'] }, count: 'view' },
    { name: 'snoozed', label: 'Snoozed', list: { snoozed: true } },
    { name: 'archived', label: 'Archived', list: { archived: true } },
  ];
  const views = Object.fromEntries(TABS.filter((t) => t.count === 'view').map((t) => [t.name, t.list]));
  const counts = { unread: 0 };
  const CHANNELS = { IN_APP: 'In app', PUSH: 'Push' };
  const HOUR = 60 * 60 * 1000;
  let tab = TABS[0];

  function setStatus(text, kind) {
    $('status').textContent = text;
    $('status').className = `status ${kind || ''}`;
  }

  function setCount(count) {
    $('unread-count').textContent = String(count);
    $('unread-count').classList.toggle('zero', count === 0);
    document.title = count ? `(${count}) herald · inbox` : 'herald · inbox';
    counts.unread = count;
    showCounts();
  }

  function showCounts() {
    for (const t of TABS.filter((t) => t.count)) {
      $(`tab-${t.name}`).querySelector('.count').textContent = String(counts[t.count === 'view' ? t.name : 'unread'] ?? 0);
    }
  }

  // Every request is answered by its ack; no answer reads as a failure.
  function ask(event, payload) {
    return socket.timeout(5000).emitWithAck(event, payload)
      .catch(() => ({ success: false, error: { code: 'timeout', message: 'herald did not answer' } }));
  }

  // A failure the user should see, or none.
  function notice(element, ack) {
    $(element).hidden = !ack || ack.success;
    $(element).textContent = ack && !ack.success ? ack.error.message : '';
  }

  function when(iso) {
    const at = new Date(iso);
    return at.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  // Whether a notification pushed as new (so unread, not archived, not
  // snoozed) belongs in the open tab. A kind pattern is a kind, a prefix
  // and `.*`, or `*`.
  function belongs(n) {
    const { kinds, importance, archived, snoozed } = tab.list;
    const matches = (p) => p === '*' || p === n.kind || (p.endsWith('.*') && n.kind.startsWith(p.slice(0, -1)));
    return !archived && !snoozed && (!kinds || kinds.some(matches)) && (!importance || importance.includes(n.importance));
  }

  function button(label, name, run) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.setAttribute('aria-label', name);
    b.addEventListener('click', (event) => {
      event.stopPropagation(); // not a click on the item, which reads it
      run();
    });
    return b;
  }

  function render() {
    const list = $('list');
    list.replaceChildren();
    const sorted = [...items.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    if (!sorted.length) {
      list.append(emptyLine('Nothing here yet.'));
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
      for (const [shown, text] of [[n.importance === 'high' || n.importance === 'urgent', n.importance], [n.muted, 'muted']]) {
        if (!shown) continue;
        const tag = document.createElement('span');
        tag.className = `tag ${text}`;
        tag.textContent = text;
        title.append(tag);
      }
      const message = document.createElement('div');
      message.className = 'message';
      message.textContent = n.message;
      body.append(title, message);
      const side = document.createElement('div');
      side.className = 'side';
      const time = document.createElement('time');
      time.dateTime = n.createdAt;
      time.textContent = when(n.createdAt);
      side.append(time);
      if (n.snoozedUntil) {
        const until = document.createElement('time');
        until.className = 'until';
        until.dateTime = n.snoozedUntil;
        until.textContent = `until ${when(n.snoozedUntil)}`;
        side.append(until);
      }
      const actions = document.createElement('span');
      actions.className = 'item-actions';
      if (tab.list.archived) {
        actions.append(button('Unarchive', `Unarchive ${n.title}`, () => act('mark.unarchived', { notificationId: n.id })));
      } else if (tab.list.snoozed) {
        actions.append(button('Unsnooze', `Unsnooze ${n.title}`, () => act('mark.unsnoozed', { notificationId: n.id })));
      } else {
        actions.append(button('Archive', `Archive ${n.title}`, () => act('mark.archived', { notificationId: n.id })));
        if (!n.readAt) {
          const until = () => new Date(Date.now() + HOUR).toISOString();
          actions.append(button('Snooze 1 h', `Snooze ${n.title} for an hour`,
            () => act('mark.snoozed', { notificationId: n.id, until: until() })));
        }
      }
      side.append(actions);
      li.append(dot, body, side);
      li.addEventListener('click', () => markRead(n.id));
      list.append(li);
    }
    const unread = sorted.filter((n) => !n.readAt).length;
    $('summary').textContent = `${sorted.length} notification${sorted.length === 1 ? '' : 's'}, ${unread} unread`;
  }

  // Lists the open tab. A change pushed while a list is on its way may be
  // missing from it: then it lists again.
  let loading = false;
  let stale = false;
  async function load() {
    if (loading) {
      stale = true;
      return;
    }
    loading = true;
    do {
      stale = false;
      const page = await ask('notifications.list', { limit: 50, ...tab.list });
      if (page.success && !stale) {
        items.clear();
        for (const n of page.items) items.set(n.id, n);
        render();
      }
    } while (stale);
    loading = false;
  }

  // A change pushed by herald, applied to what is shown.
  function changed() {
    if (loading) stale = true;
    render();
  }

  function select(next) {
    tab = next;
    for (const t of TABS) {
      const b = $(`tab-${t.name}`);
      b.setAttribute('aria-selected', String(t === tab));
      b.tabIndex = t === tab ? 0 : -1;
    }
    $('panel').setAttribute('aria-labelledby', `tab-${tab.name}`);
    items.clear();
    render();
    if (socket && socket.connected) load();
  }

  for (const t of TABS) {
    const b = document.createElement('button');
    b.type = 'button';
    b.id = `tab-${t.name}`;
    b.setAttribute('role', 'tab');
    b.setAttribute('aria-controls', 'panel');
    b.textContent = t.label;
    if (t.count) {
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = '0';
      b.append(' ', count);
    }
    b.addEventListener('click', () => select(t));
    $('tabs').append(b);
  }
  $('tabs').addEventListener('keydown', (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    select(TABS[(TABS.indexOf(tab) + step + TABS.length) % TABS.length]);
    $(`tab-${tab.name}`).focus();
  });
  select(tab);

  // Reading a snoozed notification ends its snooze: it leaves Snoozed.
  function readHere(id, readAt) {
    const n = items.get(id);
    if (!n) return;
    n.readAt = n.readAt || readAt;
    if (tab.list.unreadOnly || tab.list.snoozed) items.delete(id);
  }

  async function markRead(id) {
    const n = items.get(id);
    if (!n || n.readAt) return;
    const ack = await ask('mark.read', { notificationId: id });
    if (ack.success) {
      readHere(id, ack.readAt);
      render();
    }
  }

  // Archive, unarchive, snooze or unsnooze: each takes the notification
  // out of the open tab, here at once and on every other device by its
  // push.
  async function act(event, payload) {
    const ack = await ask(event, payload);
    notice('notice', ack);
    if (ack.success) {
      items.delete(payload.notificationId);
      render();
    }
  }

  function showPreferences(preferences) {
    const list = $('preference-list');
    list.replaceChildren();
    if (!preferences.length) {
      list.append(emptyLine('None: every kind is on.'));
    }
    for (const p of preferences) {
      const li = document.createElement('li');
      li.className = `preference${p.enabled ? '' : ' off'}`;
      li.dataset.pattern = p.kindPattern;
      li.dataset.channel = p.channel;
      const what = document.createElement('code');
      what.textContent = p.kindPattern;
      const channel = document.createElement('span');
      channel.textContent = CHANNELS[p.channel] || p.channel;
      const state = document.createElement('span');
      state.className = 'state';
      state.textContent = p.enabled ? 'on' : 'off';
      const toggle = button(p.enabled ? 'Turn off' : 'Turn on',
        `Turn ${p.kindPattern} ${p.enabled ? 'off' : 'on'} for ${channel.textContent}`,
        () => setPreference({ kindPattern: p.kindPattern, channel: p.channel, enabled: !p.enabled }));
      li.append(what, channel, state, toggle);
      list.append(li);
    }
  }

  async function setPreference(payload) {
    const ack = await ask('preferences.set', payload);
    notice('pref-error', ack);
    if (ack.success) showPreferences(ack.preferences);
    return ack.success;
  }

  function connect() {
    $('login').hidden = true;
    $('inbox').hidden = false;
    setStatus('connecting…');
    socket = io('/notifications', {
      // A function, so every reconnect sends the latest position.
      auth: (cb) => cb({ token, lastEventId }),
    });
    // Live events move the position once connection:success has set it.
    const track = (eventId) => { if (eventId && socket.synced) lastEventId = eventId; };
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
    socket.on('sync:reset', () => { items.clear(); changed(); });
    // A snooze that ends (woken, or unsnoozed on any device) sends its
    // notification again as new: it leaves Snoozed for the other tabs.
    socket.on('notification:new', (n) => {
      if (tab.list.snoozed) items.delete(n.id);
      else if (belongs(n) && !items.has(n.id)) items.set(n.id, { ...n, readAt: null });
      track(n.eventId);
      changed();
    });
    socket.on('notification:read', ({ notificationId, readAt, eventId }) => {
      readHere(notificationId, readAt);
      track(eventId);
      changed();
    });
    socket.on('notification:retracted', ({ notificationId, eventId }) => {
      items.delete(notificationId);
      track(eventId);
      changed();
    });
    // Archived, unarchived and snoozed ones move between the Archived or
    // Snoozed tab and the others; the tab they arrive in lists again to
    // show them. An unarchived one is read, so never snoozed.
    socket.on('notification:archived', ({ notificationId, eventId }) => {
      track(eventId);
      if (tab.list.archived) load(); else { items.delete(notificationId); changed(); }
    });
    socket.on('notification:unarchived', ({ notificationId, eventId }) => {
      track(eventId);
      if (tab.list.archived) { items.delete(notificationId); changed(); } else if (!tab.list.snoozed) load();
    });
    socket.on('notification:snoozed', ({ notificationId, eventId }) => {
      track(eventId);
      if (tab.list.snoozed) load(); else { items.delete(notificationId); changed(); }
    });
    socket.on('preferences:updated', ({ preferences, eventId }) => {
      showPreferences(preferences);
      track(eventId);
      load(); // what is muted changed
    });
    socket.on('notification:count', ({ count }) => setCount(count));
    socket.on('notification:counts', ({ counts: latest }) => {
      Object.assign(counts, latest);
      showCounts();
    });
    socket.on('session:expired', () => setStatus('session expired', 'error'));
    socket.on('connection:success', async (hello) => {
      socket.synced = true;
      lastEventId = hello.lastEventId;
      $('user-name').textContent = hello.userName;
      setCount(hello.unreadCount);
      setStatus('live', 'connected');
      if (!document.body.dataset.push) offerPush();
      // History, read ones included; live events keep it current from here.
      load();
      const watched = await ask('counts.watch', { views });
      if (watched.success) {
        Object.assign(counts, watched.counts);
        showCounts();
      }
      const kept = await ask('preferences.get', {});
      if (kept.success) showPreferences(kept.preferences);
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
    const ack = await ask('mark.all_read', {});
    notice('notice', ack);
    if (ack.success) {
      for (const id of [...items.keys()]) readHere(id, new Date().toISOString());
      render();
    }
  });

  // Each one archived arrives as notification:archived, here too.
  $('archive-read').addEventListener('click', async () => notice('notice', await ask('archive.all_read', {})));

  $('preference-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const saved = await setPreference({
      kindPattern: $('pref-kind').value.trim(),
      channel: $('pref-channel').value,
      enabled: $('pref-enabled').checked,
    });
    if (saved) $('pref-kind').value = '';
  });
  $('pref-reset').addEventListener('click', () => setPreference({ reset: true }));

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
