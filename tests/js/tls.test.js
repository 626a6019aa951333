'use strict';
// herald's own TLS with the official socket.io-client over wss://, trusting
// only a CA the test makes with openssl.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io } = require('socket.io-client');
const { startHerald, once } = require('./support');

let dir;
let herald;
let ca;
const sockets = [];

// A test CA and a server certificate for 127.0.0.1 and localhost it signed.
function certificates() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-js-tls-'));
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=herald js test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(dir, 'server.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', '0x2001', '-days', '2', '-out', 'server.pem', '-extfile', 'server.ext');
  return {
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
  };
}

before(async () => {
  const files = certificates();
  ca = files.ca;
  herald = await startHerald(
    { HERALD_TLS_CERT_FILE: files.cert, HERALD_TLS_KEY_FILE: files.key },
    { ca },
  );
});

after(async () => {
  for (const socket of sockets) {
    socket.disconnect();
    socket.io.engine?.close();
  }
  const { code } = await herald.stop();
  assert.equal(code, 0);
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(token, options) {
  const socket = io(`${herald.url}/notifications`, {
    auth: { token },
    transports: ['websocket'],
    reconnection: false,
    ...options,
  });
  sockets.push(socket);
  return socket;
}

test('a socket over wss:// receives its notifications; an untrusted certificate is refused', async () => {
  assert.match(herald.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const ada = await herald.user('Ada Lovelace');
  const socket = open(herald.token(ada), { ca });
  const success = await once(socket, 'connection:success');
  assert.equal(success.userId, ada);
  assert.equal(socket.io.engine.transport.name, 'websocket');
  const arrived = once(socket, 'notification:new');
  await herald.notify(ada, 'over wss');
  assert.equal((await arrived).title, 'over wss');

  // Without the test CA the client does not trust herald's certificate.
  const untrusted = open(herald.token(ada), {});
  const error = await once(untrusted, 'connect_error');
  assert.equal(error.message, 'websocket error');
  assert.match(String(error.description?.message), /unable to verify the first certificate/);
});
