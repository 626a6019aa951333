'use strict';
// Replay amplification, measured: N concurrent connects of one user, each
// resuming from a forged `lastEventId`, against a herald binary with a
// backlog of that user's events retained. Reports the herald process's
// VmRSS and VmHWM (/proc/PID/status) before, at the peak and after, what
// each client was sent, and how long the connects took.
//
//   node benches/attacks/replay.js --bin target/release/herald \
//        --database-url postgres://postgres@127.0.0.1:5432/postgres \
//        [--events 10000] [--connects 10] [--data-bytes 2048] [--last-event-id 1:1:]...
//
// Each --last-event-id is one round on a fresh herald process: `none`
// connects without one (a control), `issued` resumes from a real position
// taken just before the backlog was written, anything else is sent as is.
//
// It creates a database of its own in that cluster (dropped at the end),
// starts `herald serve` on 127.0.0.1 port 0, and talks to it over loopback
// only. Every wait is bounded; the run takes seconds. Dependencies (pg,
// socket.io-client) come from tests/js: run `npm ci` there once.

const path = require('node:path');
const { spawn } = require('node:child_process');
const { createHmac, randomUUID } = require('node:crypto');
const fs = require('node:fs');
const readline = require('node:readline');
const { createRequire } = require('node:module');

const fromTests = createRequire(path.join(__dirname, '..', '..', 'tests', 'js', 'package.json'));
const { Client } = fromTests('pg');
const { io } = fromTests('socket.io-client');

const SECRET = 'measure-secret-long-enough-0123456789';
const CONNECT_TIMEOUT_MS = 60_000;

function options() {
  const args = process.argv.slice(2);
  const opts = { events: 10_000, connects: 10, dataBytes: 2048, lastEventIds: [] };
  for (let i = 0; i < args.length; i += 2) {
    const [flag, value] = [args[i], args[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case '--bin': opts.bin = value; break;
      case '--database-url': opts.adminUrl = value; break;
      case '--events': opts.events = Number(value); break;
      case '--connects': opts.connects = Number(value); break;
      case '--data-bytes': opts.dataBytes = Number(value); break;
      case '--last-event-id': opts.lastEventIds.push(value); break;
      default: throw new Error(`unknown option ${flag}`);
    }
  }
  if (!opts.bin || !opts.adminUrl) throw new Error('--bin and --database-url are required');
  if (!new URL(opts.adminUrl.replace(/^postgres(ql)?:/, 'http:')).hostname.match(/^(127\.|localhost$|\[::1\]$)/)) {
    throw new Error('--database-url must be a loopback address');
  }
  if (opts.lastEventIds.length === 0) opts.lastEventIds.push('1:1:');
  return opts;
}

function base64url(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function token(user) {
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url({ sub: user, iat: now, exp: now + 3600 })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))[1]);
  return { rssMiB: kib('VmRSS') / 1024, hwmMiB: kib('VmHWM') / 1024 };
}

async function startHerald(bin, databaseUrl) {
  const child = spawn(bin, ['serve'], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: databaseUrl,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: '0',
      HERALD_LOG_FORMAT: 'json',
      RUST_LOG: 'warn,herald=info',
      // The measurement opens more sockets for one user than a browser would.
      HERALD_MAX_SOCKETS_PER_USER: '1000',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const address = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.address) resolve(entry.address);
      } catch {
        // not JSON
      }
    });
    child.on('exit', (code) => reject(new Error(`herald exited with ${code}`)));
    setTimeout(() => reject(new Error('herald did not start within 30 s')), 30_000).unref();
  });
  for (let i = 0; i < 200; i += 1) {
    const ready = await fetch(`http://${address}/health/ready`).then((r) => r.ok, () => false);
    if (ready) return { child, address };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error('herald not ready within 10 s');
}

// One resuming client: what it was sent until connection:success.
function resume(address, auth) {
  return new Promise((resolve) => {
    const socket = io(`http://${address}/notifications`, {
      transports: ['websocket'],
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      auth,
    });
    const sent = { events: 0, bytes: 0, reset: false, error: null };
    let finished = false;
    const done = (error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sent.error = error;
      socket.close();
      resolve(sent);
    };
    const timer = setTimeout(() => done('no connection:success within 60 s'), CONNECT_TIMEOUT_MS);
    socket.onAny((event, payload) => {
      sent.events += 1;
      sent.bytes += event.length + JSON.stringify(payload ?? null).length;
      if (event === 'sync:reset') sent.reset = true;
      if (event === 'connection:success') done(null);
    });
    socket.on('connect_error', (err) => done(`connect_error ${err.message}`));
    socket.on('disconnect', (reason) => done(`disconnected: ${reason}`));
  });
}

// One herald process per round, so each starts from the same memory.
async function round(bin, databaseUrl, user, lastEventId, connects) {
  const herald = await startHerald(bin, databaseUrl);
  try {
    return await measure(herald, user, lastEventId, connects);
  } finally {
    await stop(herald);
  }
}

async function stop(herald) {
  herald.child.kill('SIGTERM');
  await new Promise((r) => { herald.child.on('exit', r); setTimeout(r, 15_000).unref(); });
}

async function measure(herald, user, lastEventId, connects) {
  const before = memory(herald.child.pid);
  let peak = before.rssMiB;
  const sampler = setInterval(() => {
    peak = Math.max(peak, memory(herald.child.pid).rssMiB);
  }, 20);
  const started = process.hrtime.bigint();
  const clients = await Promise.all(
    Array.from({ length: connects }, () => resume(herald.address, lastEventId === 'none' ? { token: token(user) } : { token: token(user), lastEventId })),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  clearInterval(sampler);
  const after = memory(herald.child.pid);
  return {
    lastEventId,
    connects,
    seconds: Number(seconds.toFixed(2)),
    rssBeforeMiB: Number(before.rssMiB.toFixed(1)),
    rssPeakMiB: Number(Math.max(peak, after.rssMiB).toFixed(1)),
    rssAfterMiB: Number(after.rssMiB.toFixed(1)),
    hwmAfterMiB: Number(after.hwmMiB.toFixed(1)),
    resets: clients.filter((c) => c.reset).length,
    eventsPerClient: Math.max(...clients.map((c) => c.events)),
    mibSentPerClient: Number((Math.max(...clients.map((c) => c.bytes)) / 2 ** 20).toFixed(2)),
    errors: clients.filter((c) => c.error).map((c) => c.error),
  };
}

async function main() {
  const opts = options();
  const name = `herald_measure_${randomUUID().replace(/-/g, '')}`;
  const admin = new Client({ connectionString: opts.adminUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const databaseUrl = opts.adminUrl.replace(/\/[^/]*$/, `/${name}`);
  try {
    const bin = path.resolve(opts.bin);
    // The first start migrates the database and issues a real position
    // from before the backlog (`issued`); the rounds start on it again.
    const first = await startHerald(bin, databaseUrl);
    const pg = new Client({ connectionString: databaseUrl });
    await pg.connect();
    const user = randomUUID();
    await pg.query(`insert into herald.users (id, email, name) values ($1, $2, 'Measured')`, [user, `${user}@example.com`]);
    const issued = await new Promise((resolve, reject) => {
      const socket = io(`http://${first.address}/notifications`, {
        transports: ['websocket'], reconnection: false, auth: { token: token(user) },
      });
      const timer = setTimeout(() => reject(new Error('no connection:success')), 10_000);
      socket.on('connection:success', (hello) => {
        clearTimeout(timer);
        socket.close();
        resolve(hello.lastEventId);
      });
    });
    await stop(first);
    await pg.query(
      `insert into herald.notifications (user_id, title, message, data)
       select $1, 'backlog ' || n, repeat('m', 200), jsonb_build_object('blob', repeat('x', $3::int))
         from generate_series(1, $2::int) as n`,
      [user, opts.events, opts.dataBytes],
    );
    await pg.end();
    const results = [];
    for (const lastEventId of opts.lastEventIds) {
      const id = lastEventId === 'issued' ? issued : lastEventId;
      results.push({ asked: lastEventId, ...await round(bin, databaseUrl, user, id, opts.connects) });
    }
    console.log(JSON.stringify({
      bin: opts.bin, events: opts.events, dataBytes: opts.dataBytes, results,
    }, null, 2));
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(error);
  process.exit(1);
});
