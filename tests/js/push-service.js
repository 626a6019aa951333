'use strict';
// A push service for the browser test, playing the part FCM or Mozilla's
// autopush play: each POST must carry a VAPID token that verifies (ES256
// against `k`, `aud` this service's origin, `exp` at most 24 h ahead), and
// a body that decrypts (RFC 8291 aes128gcm) with the subscription's own
// private key and auth secret. What decrypts is kept for the test; what
// does not is answered 400 and kept as a violation.

const crypto = require('node:crypto');
const http = require('node:http');

const b64url = (buffer) => Buffer.from(buffer).toString('base64url');

// A browser's side of a subscription, as PushManager.subscribe makes it.
function browserKeys() {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  return { ecdh, auth: crypto.randomBytes(16) };
}

// RFC 8291 §3.4 and RFC 8188: one record, padding delimiter 0x02.
function decrypt(body, { ecdh, auth }) {
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body[20];
  const serverPublic = body.subarray(21, 21 + idLength);
  const ciphertext = body.subarray(21 + idLength);
  if (idLength !== 65 || ciphertext.length > recordSize) throw new Error('not one aes128gcm record with a P-256 keyid');
  const shared = ecdh.computeSecret(serverPublic);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), ecdh.getPublicKey(), serverPublic]);
  const ikm = Buffer.from(crypto.hkdfSync('sha256', shared, auth, keyInfo, 32));
  const cek = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(-16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, -16)), decipher.final()]);
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end -= 1;
  if (padded[end] !== 2) throw new Error('no last-record padding delimiter');
  return padded.subarray(0, end);
}

// RFC 8292: Authorization: vapid t=<JWT>, k=<public key>.
function verifyVapid(authorization, origin, serverKey) {
  const match = /^vapid t=([^,]+), k=([A-Za-z0-9_-]+)$/.exec(authorization || '');
  if (!match) throw new Error('Authorization is not vapid t=..., k=...');
  const [, token, k] = match;
  if (k !== serverKey) throw new Error('k is not the server key');
  const point = Buffer.from(k, 'base64url');
  if (point.length !== 65 || point[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
  const key = crypto.createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) },
    format: 'jwk',
  });
  const [header, payload, signature] = token.split('.');
  const signed = crypto.verify('sha256', Buffer.from(`${header}.${payload}`), { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature, 'base64url'));
  if (!signed) throw new Error('the VAPID token does not verify');
  if (JSON.parse(Buffer.from(header, 'base64url')).alg !== 'ES256') throw new Error('alg is not ES256');
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  if (claims.aud !== origin) throw new Error(`aud ${claims.aud} is not ${origin}`);
  const now = Date.now() / 1000;
  if (!(claims.exp > now && claims.exp <= now + 24 * 3600)) throw new Error('exp is not within 24 h');
  if (!/^(mailto:|https:)/.test(claims.sub || '')) throw new Error('sub is not a contact');
}

// Starts the service for herald's public key; resolves once it listens.
async function startPushService(serverKey) {
  const subscriptions = new Map(); // name -> browser keys
  const received = [];
  const violations = [];
  const waiters = [];
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const name = (/^\/push\/([\w-]+)$/.exec(request.url) || [])[1];
      try {
        if (request.method !== 'POST' || !subscriptions.has(name)) throw new Error(`no subscription at ${request.url}`);
        if (request.headers['content-encoding'] !== 'aes128gcm') throw new Error('Content-Encoding is not aes128gcm');
        verifyVapid(request.headers.authorization, service.origin, serverKey);
        const plain = decrypt(Buffer.concat(chunks), subscriptions.get(name));
        if (plain.length > 3000) throw new Error(`the payload is ${plain.length} bytes`);
        received.push({
          name,
          topic: request.headers.topic,
          urgency: request.headers.urgency,
          ttl: Number(request.headers.ttl),
          payload: plain.toString('utf8'),
        });
        response.writeHead(201).end();
      } catch (error) {
        violations.push(`${request.url}: ${error.message}`);
        response.writeHead(400).end();
      }
      for (const waiter of waiters.splice(0)) waiter();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const service = {
    origin: `http://127.0.0.1:${server.address().port}`,
    received,
    violations,
    // A new subscription on this service: PushSubscription.toJSON() for it.
    subscribe(name) {
      const keys = browserKeys();
      subscriptions.set(name, keys);
      return {
        endpoint: `${service.origin}/push/${name}`,
        expirationTime: null,
        keys: { p256dh: b64url(keys.ecdh.getPublicKey()), auth: b64url(keys.auth) },
      };
    },
    // Resolves with the first push that `matches`, waiting up to `ms`.
    async next(matches, ms = 20000) {
      const deadline = Date.now() + ms;
      for (;;) {
        if (violations.length) throw new Error(`push service: ${violations.join('; ')}`);
        const found = received.find(matches);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such push within ${ms} ms: ${JSON.stringify(received)}`);
        await new Promise((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, deadline - Date.now()).unref();
        });
      }
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
  return service;
}

module.exports = { startPushService };
