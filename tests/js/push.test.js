'use strict';
// Web Push in the browser: the inbox page offers notifications when push
// is configured and registers /sw.js; herald pushes to a local push service
// that verifies and decrypts each push; the decrypted payload is handed to
// the registered service worker through the DevTools protocol (Chromium
// cannot reach a real push service here), which shows it, and closes it
// when herald's dismiss follows a read.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startHerald, launchChromium } = require('./support');
const { startPushService } = require('./push-service');

let herald;
let service;
let browser;
let keyDir;

before(async () => {
  keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-vapid-'));
  const keyFile = path.join(keyDir, 'vapid.pem');
  const publicKey = execFileSync(process.env.HERALD_BIN, ['vapid-keys', '--out', keyFile], {
    env: { PATH: process.env.PATH, RUST_LOG: 'warn' },
  }).toString().trim();
  service = await startPushService(publicKey);
  herald = await startHerald({
    HERALD_VAPID_PRIVATE_KEY_FILE: keyFile,
    HERALD_VAPID_SUBJECT: 'mailto:ops@herald.test',
    HERALD_PUSH_DELAY: '200ms',
    HERALD_PUSH_ENDPOINTS: 'any',
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
  await service?.close();
  if (keyDir) fs.rmSync(keyDir, { recursive: true, force: true });
});

// The notifications the service worker shows, as {tag, title, body}.
function shown(page) {
  return page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return (await registration.getNotifications()).map((n) => ({ tag: n.tag, title: n.title, body: n.body }));
  });
}

// How many notifications the service worker shows with `tag`, once that
// is `count` (page.waitForFunction takes a promise for a truthy answer, so
// the page is asked again instead).
async function showing(page, tag, count) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const now = await page.evaluate(async (t) => {
      const registration = await navigator.serviceWorker.ready;
      return (await registration.getNotifications({ tag: t })).length;
    }, tag);
    if (now === count) return;
    assert.ok(Date.now() < deadline, `${now} notifications tagged ${tag}, not ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('the service worker shows a push herald sent, and closes it on the dismiss after a read', async () => {
  const ada = await herald.user('Ada Lovelace');
  const token = herald.token(ada);
  const context = await browser.newContext();
  await context.grantPermissions(['notifications'], { origin: herald.url });
  const page = await context.newPage();
  page.on('pageerror', (error) => { throw error; });
  try {
    // The inbox offers notifications, because herald has a VAPID key.
    await page.goto(`${herald.url}/#token=${token}`);
    await page.waitForSelector('#status.connected');
    await page.waitForSelector('body[data-push="offered"]');
    assert.equal(await page.isVisible('#enable-push'), true);
    await page.click('#enable-push');
    await page.waitForSelector('#push-status:not([hidden])');
    // Its click registered the worker at /sw.js for the whole site, then
    // asked the browser to subscribe, which needs a push service this
    // Chromium cannot reach: the page says why instead.
    const script = await page.evaluate(async () => (await navigator.serviceWorker.ready).active.scriptURL);
    assert.equal(script, `${herald.url}/sw.js`);
    const status = await page.textContent('#push-status');
    assert.match(status, /^(Notifications on|Could not turn notifications on: .+)$/);

    // Ada's browser, subscribed on the local push service; she closes the
    // inbox, so no socket of hers gets what comes next.
    const subscription = service.subscribe('ada-laptop');
    const subscribed = await fetch(`${herald.url}/api/push/subscriptions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify(subscription),
    });
    assert.equal(subscribed.status, 201);
    await page.goto(`${herald.url}/health/live`);

    const cdp = await context.newCDPSession(page);
    const registrations = new Promise((resolve) => {
      cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: list }) => {
        const live = list.find((r) => r.scopeURL === `${herald.url}/` && !r.isDeleted);
        if (live) resolve(live.registrationId);
      });
    });
    await cdp.send('ServiceWorker.enable');
    const registrationId = await registrations;
    const deliver = (payload) => cdp.send('ServiceWorker.deliverPushMessage', {
      origin: herald.url, registrationId, data: payload,
    });

    const { rows: [{ id }] } = await herald.pg.query(
      "insert into herald.notifications (user_id, title, message, importance, action_url) values ($1, 'Your order shipped', 'It arrives on Thursday.', 'high', 'https://shop.example/o/1') returning id",
      [ada],
    );
    const topic = id.replace(/-/g, '');
    const push = await service.next((p) => p.topic === topic && JSON.parse(p.payload).type === 'notification');
    assert.equal(push.urgency, 'high');
    const body = JSON.parse(push.payload);
    assert.equal(body.notification.id, id);
    assert.equal(body.notification.actionUrl, 'https://shop.example/o/1');

    await deliver(push.payload);
    await showing(page, id, 1);
    assert.deepEqual(await shown(page), [{ tag: id, title: 'Your order shipped', body: 'It arrives on Thursday.' }]);

    // Read on another device: herald sends a dismiss with the same Topic,
    // and the worker closes what it showed.
    const read = await fetch(`${herald.url}/api/notifications/${id}/read`, {
      method: 'POST', headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(read.status, 200);
    const dismiss = await service.next((p) => p.topic === topic && JSON.parse(p.payload).type === 'dismiss');
    assert.deepEqual(JSON.parse(dismiss.payload), { type: 'dismiss', notificationId: id });
    await deliver(dismiss.payload);
    await showing(page, id, 0);
    assert.deepEqual(service.violations, []);
  } finally {
    await context.close();
  }
});

test('without a VAPID key the inbox offers no notifications', async () => {
  const plain = await startHerald();
  const page = await browser.newPage();
  try {
    const grace = await plain.user('Grace Hopper');
    await page.goto(`${plain.url}/#token=${plain.token(grace)}`);
    await page.waitForSelector('#status.connected');
    // The page asked herald whether push is on, and herald said no.
    await page.waitForSelector('body[data-push="off"]');
    assert.equal(await page.isHidden('#enable-push'), true);
    assert.equal(await page.isHidden('#push-status'), true);
  } finally {
    await page.close();
    await plain.stop();
  }
});
