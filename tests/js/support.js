'use strict';
// Test support: a database per test file, a real `herald serve` on port 0,
// producers' SQL through pg, and tokens from `herald token`.

const { spawn, execFileSync } = require('node:child_process');
const { randomUUID } = require('node:crypto');
const https = require('node:https');
const readline = require('node:readline');
const { Client } = require('pg');

const SECRET = 'js-test-secret-long-enough-0123456789';
const BIN = process.env.HERALD_BIN;
const ADMIN_URL = process.env.HERALD_TEST_DATABASE_URL;

if (!BIN || !ADMIN_URL) {
  throw new Error('HERALD_BIN and HERALD_TEST_DATABASE_URL are unset: run through scripts/test');
}

async function createDatabase() {
  const name = `herald_js_${randomUUID().replace(/-/g, '')}`;
  const admin = new Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  return ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
}

// GET over HTTPS, trusting `ca` only; resolves with the status.
function httpsStatus(url, ca) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, (response) => {
      response.resume();
      resolve(response.statusCode);
    }).on('error', reject);
  });
}

// Starts herald on a fresh database; resolves once it listens. With `ca`,
// herald serves TLS (env names its files) and `url` is https://.
async function startHerald(env = {}, { ca } = {}) {
  const databaseUrl = await createDatabase();
  const child = spawn(BIN, ['serve'], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: databaseUrl,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: '0',
      HERALD_LOG_FORMAT: 'json',
      RUST_LOG: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  const address = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line);
        if (entry.address) resolve(entry.address);
      } catch {
        // not JSON: keep it for the failure message
      }
    });
    child.on('exit', (code) => reject(new Error(`herald exited with ${code}:\n${logs.join('\n')}`)));
    setTimeout(() => reject(new Error(`herald did not start:\n${logs.join('\n')}`)), 15000).unref();
  });
  const pg = new Client({ connectionString: databaseUrl });
  await pg.connect();
  const url = `${ca ? 'https' : 'http'}://${address}`;
  const ready = ca
    ? () => httpsStatus(`${url}/health/ready`, ca).catch(() => null)
    : () => fetch(`${url}/health/ready`).then((r) => r.status, () => null);
  // Wait for readiness (the listener connects right after the bind).
  for (let i = 0; i < 100; i++) {
    if ((await ready()) === 200) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    pg,
    logs,
    issued: [],
    token(userId, ttl = '1h') {
      const token = execFileSync(BIN, ['token', '--user', userId, '--ttl', ttl], {
        env: { PATH: process.env.PATH, JWT_SECRET: SECRET, RUST_LOG: 'warn' },
      })
        .toString()
        .trim();
      this.issued.push(token);
      return token;
    },
    async user(name, { role = 'USER', sectorId = null } = {}) {
      const id = randomUUID();
      await pg.query(
        'insert into herald.users (id, email, name, role, sector_id) values ($1, $2, $3, $4, $5)',
        [id, `${id}@example.com`, name, role, sectorId],
      );
      return id;
    },
    async notify(userId, title) {
      const { rows } = await pg.query(
        'insert into herald.notifications (user_id, title) values ($1, $2) returning id',
        [userId, title],
      );
      return rows[0].id;
    },
    async stop() {
      await pg.end();
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      child.kill('SIGTERM');
      return exited;
    },
  };
}

// Resolves with the next `event` on `socket`, or rejects after `ms`.
function once(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    timer.unref();
    socket.once(event, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

// Headless Chromium (Debian's; playwright cannot download one here), kept
// from reaching out: this machine's network is closed.
function launchChromium() {
  // Required here, so the tests that drive no browser need no playwright.
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: process.env.HERALD_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

module.exports = { startHerald, once, launchChromium, SECRET };
