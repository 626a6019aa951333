'use strict';
// herald with the official socket.io-client 4.8.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io } = require('socket.io-client');
const { startHerald, once } = require('./support');

let herald;
const sockets = [];

before(async () => {
  herald = await startHerald();
});

after(async () => {
  for (const socket of sockets) {
    socket.disconnect();
    // A refused socket leaves its manager's connection open; close it too.
    socket.io.engine?.close();
  }
  const { code, signal } = await herald.stop();
  assert.equal(code, 0, `herald exited with ${code} (${signal}) on SIGTERM`);
  for (const token of herald.issued) {
    assert.ok(!herald.logs.some((line) => line.includes(token)), 'a token was written to the log');
  }
});

// Connects and collects every event from the first packet on.
function open(token, options = {}) {
  const socket = io(`${herald.url}/notifications`, {
    auth: token === undefined ? {} : { token },
    transports: ['websocket'],
    reconnection: false,
    ...options,
  });
  socket.received = [];
  socket.onAny((event, data) => socket.received.push([event, data]));
  sockets.push(socket);
  return socket;
}

test('the connect sequence arrives in the documented order', async () => {
  const ada = await herald.user('Ada Lovelace');
  await herald.notify(ada, 'first');
  await herald.notify(ada, 'second');
  const socket = open(herald.token(ada));
  const success = await once(socket, 'connection:success');
  assert.deepEqual(
    socket.received.map(([event, data]) => (event === 'notification:new' ? data.title : event)),
    ['second', 'first', 'notification:count', 'connection:success'],
  );
  assert.deepEqual(socket.received[2][1], { count: 2 });
  assert.equal(success.userId, ada);
  assert.equal(success.userName, 'Ada Lovelace');
  assert.equal(success.unreadCount, 2);
  assert.equal(typeof success.lastEventId, 'string');
  for (const [, n] of socket.received.slice(0, 2)) {
    for (const field of ['id', 'audience', 'kind', 'importance', 'title', 'message', 'actionUrl', 'data', 'createdAt', 'expiresAt', 'eventId']) {
      assert.ok(field in n, `${field} missing`);
    }
    assert.match(n.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  }
});

test('a row inserted with SQL reaches the connected client in milliseconds', async () => {
  const ada = await herald.user('Ada');
  const socket = open(herald.token(ada));
  await once(socket, 'connection:success');
  const took = [];
  for (let i = 0; i < 20; i++) {
    const arrived = once(socket, 'notification:new');
    const started = process.hrtime.bigint();
    await herald.notify(ada, `live ${i}`);
    const n = await arrived;
    took.push(Number(process.hrtime.bigint() - started) / 1e6);
    assert.equal(n.title, `live ${i}`);
    assert.equal(typeof n.eventId, 'string');
  }
  took.sort((a, b) => a - b);
  console.log(`INSERT (autocommit) -> notification:new over WebSocket: p50 ${took[10].toFixed(1)} ms, max ${took[19].toFixed(1)} ms`);
  // Generous: tells "pushed on NOTIFY" from "waited for a poll or a timeout".
  assert.ok(took[10] < 250, `median ${took[10]} ms`);
});

test('refusals arrive as connect_error with their code as the message', async () => {
  const cases = [
    [undefined, 'missing_token'],
    ['garbage', 'invalid_token'],
    [herald.token('00000000-0000-4000-8000-000000000000'), 'user_not_found'],
  ];
  for (const [token, expected] of cases) {
    const socket = open(token);
    const error = await once(socket, 'connect_error');
    assert.equal(error.message, expected);
  }
  const gone = await herald.user('Gone');
  await herald.pg.query('update herald.users set is_active = false where id = $1', [gone]);
  const error = await once(open(herald.token(gone)), 'connect_error');
  assert.equal(error.message, 'user_inactive');
});

test('acks: mark.read reaches the other device, list pages, malformed payloads are refused', async () => {
  const ada = await herald.user('Ada');
  const phone = open(herald.token(ada));
  const laptop = open(herald.token(ada));
  await Promise.all([once(phone, 'connection:success'), once(laptop, 'connection:success')]);
  const arrived = Promise.all([once(phone, 'notification:new'), once(laptop, 'notification:new')]);
  const id = await herald.notify(ada, 'read me');
  await arrived;

  const readOnLaptop = once(laptop, 'notification:read');
  const ack = await phone.timeout(5000).emitWithAck('mark.read', { notificationId: id });
  assert.equal(ack.success, true);
  assert.equal(ack.notificationId, id);
  const read = await readOnLaptop;
  assert.equal(read.notificationId, id);
  assert.equal(read.readAt, ack.readAt);
  const again = await phone.timeout(5000).emitWithAck('mark.read', { notificationId: id });
  assert.equal(again.readAt, ack.readAt);

  const page = await phone.timeout(5000).emitWithAck('notifications.list', { limit: 1 });
  assert.equal(page.success, true);
  assert.equal(page.items.length, 1);
  assert.equal(page.items[0].readAt, ack.readAt);
  assert.equal(page.nextCursor, null);

  for (const bad of ['a string', null, {}, { notificationId: 'nope' }]) {
    const refused = await phone.timeout(5000).emitWithAck('mark.read', bad);
    assert.deepEqual([refused.success, refused.error.code], [false, 'invalid_payload'], JSON.stringify(bad));
  }
  assert.ok(phone.connected, 'a malformed payload must not close the socket');
  const all = await phone.timeout(5000).emitWithAck('mark.all_read', {});
  assert.deepEqual(all, { success: true, count: 0 });
});

test('long-polling works as well as WebSocket', async () => {
  const ada = await herald.user('Ada');
  const socket = open(herald.token(ada), { transports: ['polling'] });
  await once(socket, 'connection:success');
  const arrived = once(socket, 'notification:new');
  const id = await herald.notify(ada, 'over polling');
  assert.equal((await arrived).id, id);
});

test('a sector broadcast reaches the sector and nobody else', async () => {
  const sector = '5e000000-0000-4000-8000-0000000000aa';
  const inside = await herald.user('Inside', { sectorId: sector });
  const outside = await herald.user('Outside');
  const a = open(herald.token(inside));
  const b = open(herald.token(outside));
  await Promise.all([once(a, 'connection:success'), once(b, 'connection:success')]);
  const arrived = once(a, 'notification:new');
  await herald.pg.query("insert into herald.notifications (sector_id, title) values ($1, 'sector news')", [sector]);
  assert.equal((await arrived).title, 'sector news');
  // herald pushes in the log's order: once a notification inserted after
  // the broadcast reaches b, the broadcast would have reached it first.
  const marked = once(b, 'notification:new');
  const marker = await herald.notify(outside, 'marker');
  assert.equal((await marked).id, marker);
  const pushed = b.received.filter(([event]) => event === 'notification:new').map(([, n]) => n.id);
  assert.deepEqual(pushed, [marker], 'leaked to another sector');
});
