'use strict';
// The inbox page at GET /, in headless Chromium driven by playwright-core.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startHerald, launchChromium } = require('./support');
const OUTPUT = path.join(__dirname, 'output');

let herald;
let browser;

before(async () => {
  fs.mkdirSync(OUTPUT, { recursive: true });
  herald = await startHerald();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
});

async function open(token) {
  const page = await browser.newPage();
  page.on('pageerror', (error) => { throw error; });
  await page.goto(`${herald.url}/#token=${token}`);
  await page.waitForSelector('#status.connected', { timeout: 10000 });
  return page;
}

async function badge(page) {
  return (await page.textContent('#unread-count')).trim();
}

test('a pushed notification appears, and a read on one page lowers the count on another', async (t) => {
  const ada = await herald.user('Ada Lovelace');
  const token = herald.token(ada);
  const first = await open(token);
  const second = await open(token);
  try {
    assert.equal(await badge(first), '0');
    assert.equal(await first.textContent('#user-name'), 'Ada Lovelace');

    await herald.pg.query(
      "insert into herald.notifications (user_id, title, message, importance) values ($1, 'Your order shipped', 'It arrives on Thursday.', 'high')",
      [ada],
    );
    await first.waitForSelector('li.item.unread >> text=Your order shipped', { timeout: 5000 });
    await first.waitForFunction(() => document.querySelector('#unread-count').textContent === '1');
    await second.waitForFunction(() => document.querySelector('#unread-count').textContent === '1');

    await first.click('li.item.unread');
    await second.waitForFunction(() => document.querySelector('#unread-count').textContent === '0', null, { timeout: 5000 });
    await second.waitForSelector('li.item:not(.unread) >> text=Your order shipped');
    assert.equal(await badge(first), '0');

    const shot = path.join(OUTPUT, 'inbox.png');
    await second.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
  } catch (error) {
    const shot = path.join(OUTPUT, `failure-${Date.now()}.png`);
    await first.screenshot({ path: shot, fullPage: true }).catch(() => {});
    t.diagnostic(`screenshot of the failure: ${shot}`);
    throw error;
  } finally {
    await first.close();
    await second.close();
  }
});

test('mark all read clears the badge, and the page loads nothing from elsewhere', async () => {
  const grace = await herald.user('Grace Hopper', { role: 'ADMIN' });
  for (const title of ['one', 'two', 'three']) {
    await herald.pg.query('insert into herald.notifications (user_id, title) values ($1, $2)', [grace, title]);
  }
  const page = await browser.newPage();
  const foreign = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(herald.url)) foreign.push(request.url());
  });
  await page.goto(`${herald.url}/#token=${herald.token(grace)}`);
  await page.waitForSelector('#status.connected');
  await page.waitForFunction(() => document.querySelector('#unread-count').textContent === '3');
  assert.equal(await page.locator('li.item.unread').count(), 3);
  await page.click('#mark-all');
  await page.waitForFunction(() => document.querySelector('#unread-count').textContent === '0');
  assert.equal(await page.locator('li.item.unread').count(), 0);
  assert.deepEqual(foreign, []);
  // The token does not stay in the address bar.
  assert.ok(!page.url().includes('token='));
  await page.close();
});

test('after the browser sessions, /metrics counts pushes and reads', async () => {
  const text = await (await fetch(`${herald.url}/metrics`)).text();
  const total = (name) => text
    .split('\n')
    .filter((line) => line.startsWith(name) && /[ {]/.test(line[name.length]))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
  assert.ok(total('herald_pushes_total') > 0, 'no pushes counted');
  assert.ok(total('herald_reads_total') >= 4, 'reads not counted');
  assert.ok(total('herald_connects_total') >= 3, 'connects not counted');
});
