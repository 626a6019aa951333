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

// The text of a tab's count; '' for a tab that shows none.
function tabCount(page, name) {
  return page.evaluate((tab) => {
    const count = document.querySelector(`#tab-${tab} .count`);
    return count ? count.textContent : '';
  }, name);
}

// Waits until the tabs show these counts.
async function countsAre(page, expected) {
  await page.waitForFunction((want) => Object.entries(want).every(
    ([tab, count]) => document.querySelector(`#tab-${tab} .count`)?.textContent === String(count),
  ), expected, { timeout: 5000 });
}

const item = (page, title) => page.locator('#list li.item', { hasText: title });

// The "until …" an item of the Snoozed tab shows, and the time it stands for.
function snoozedUntil(page, title) {
  return item(page, title).locator('time.until').evaluate((time) => ({
    text: time.textContent,
    at: Date.parse(time.dateTime),
    local: `until ${new Date(time.dateTime).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })}`,
  }));
}

async function itemsAre(page, count) {
  await page.waitForFunction((n) => document.querySelectorAll('#list li.item').length === n, count, { timeout: 5000 });
}

test('tabs count their views; archive, snooze and a muted kind change them live', async (t) => {
  const linus = await herald.user('Linus Pauling');
  const inserted = [
    ['Ada mentioned you', 'mention.comment', 'normal'],
    ['Bob mentioned you', 'mention.review', 'high'],
    ['Disk almost full', 'ops.alert', 'urgent'],
    ['Your order shipped', 'order.shipped', 'normal'],
    ['Weekly digest', 'digest', 'low'],
  ];
  for (const [title, kind, importance] of inserted) {
    await herald.pg.query(
      'insert into herald.notifications (user_id, title, kind, importance) values ($1, $2, $3, $4)',
      [linus, title, kind, importance],
    );
  }
  const token = herald.token(linus);
  const page = await open(token);
  const other = await open(token); // another device of the same user
  try {
    // Five unread, two of them mentions, two high or urgent.
    await countsAre(page, { all: 5, unread: 5, mentions: 2, urgent: 2 });
    assert.equal(await tabCount(page, 'archived'), '');
    await itemsAre(page, 5);
    assert.equal(await page.getAttribute('#tab-all', 'aria-selected'), 'true');

    // Archiving here takes it out of All on both devices and reads it.
    await item(page, 'Your order shipped').getByRole('button', { name: 'Archive Your order shipped' }).click();
    await item(page, 'Your order shipped').waitFor({ state: 'detached', timeout: 5000 });
    await item(other, 'Your order shipped').waitFor({ state: 'detached', timeout: 5000 });
    await countsAre(page, { all: 4, unread: 4, mentions: 2, urgent: 2 });
    await countsAre(other, { all: 4, unread: 4 });
    await page.click('#tab-archived');
    assert.equal(await page.getAttribute('#tab-archived', 'aria-selected'), 'true');
    assert.equal(await page.getAttribute('#tab-all', 'aria-selected'), 'false');
    await item(page, 'Your order shipped').getByRole('button', { name: 'Unarchive Your order shipped' }).waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#list li.item').count(), 1);

    // Snoozed on the other device, it leaves All here.
    await page.click('#tab-all');
    await item(page, 'Weekly digest').waitFor({ timeout: 5000 });
    const snoozedFrom = Date.now();
    await item(other, 'Weekly digest').getByRole('button', { name: 'Snooze Weekly digest for an hour' }).click();
    await item(page, 'Weekly digest').waitFor({ state: 'detached', timeout: 5000 });
    const snoozedTo = Date.now();
    await countsAre(page, { all: 3, unread: 3, mentions: 2, urgent: 2 });
    assert.equal(await tabCount(page, 'snoozed'), '');

    // The Snoozed tab lists it, with the hour it comes back at.
    await page.click('#tab-snoozed');
    assert.equal(await page.getAttribute('#tab-snoozed', 'aria-selected'), 'true');
    assert.equal(await page.getAttribute('#panel', 'aria-labelledby'), 'tab-snoozed');
    await item(page, 'Weekly digest').getByRole('button', { name: 'Unsnooze Weekly digest' }).waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#list li.item').count(), 1);
    const until = await snoozedUntil(page, 'Weekly digest');
    assert.equal(until.text, until.local);
    const HOUR = 60 * 60 * 1000;
    assert.ok(until.at >= snoozedFrom + HOUR - 1000 && until.at <= snoozedTo + HOUR + 1000,
      `snoozed until ${until.text}, not an hour after the click`);

    // Unsnoozed here: it leaves Snoozed, and comes back in All on the other
    // device, counted again on both.
    await item(page, 'Weekly digest').getByRole('button', { name: 'Unsnooze Weekly digest' }).click();
    await item(page, 'Weekly digest').waitFor({ state: 'detached', timeout: 5000 });
    await item(other, 'Weekly digest').waitFor({ timeout: 5000 });
    await countsAre(other, { all: 4, unread: 4, mentions: 2, urgent: 2 });
    await countsAre(page, { all: 4, unread: 4, mentions: 2, urgent: 2 });
    await page.waitForSelector('#list li.empty', { timeout: 5000 });

    // Snoozed again on the other device, it arrives in the Snoozed tab open here.
    await item(other, 'Weekly digest').getByRole('button', { name: 'Snooze Weekly digest for an hour' }).click();
    await item(other, 'Weekly digest').waitFor({ state: 'detached', timeout: 5000 });
    await item(page, 'Weekly digest').locator('time.until').waitFor({ timeout: 5000 });
    await countsAre(page, { all: 3, unread: 3, mentions: 2, urgent: 2 });

    // Unsnoozed on the other device, it leaves the Snoozed tab here too.
    await other.click('#tab-snoozed');
    await item(other, 'Weekly digest').getByRole('button', { name: 'Unsnooze Weekly digest' }).click();
    await item(other, 'Weekly digest').waitFor({ state: 'detached', timeout: 5000 });
    await item(page, 'Weekly digest').waitFor({ state: 'detached', timeout: 5000 });
    await countsAre(page, { all: 4, unread: 4, mentions: 2, urgent: 2 });
    await countsAre(other, { all: 4, unread: 4 });
    await other.click('#tab-all');
    await item(other, 'Weekly digest').waitFor({ timeout: 5000 });

    // The Mentions tab lists its kinds only.
    await page.click('#tab-mentions');
    await item(page, 'Bob mentioned you').waitFor({ timeout: 5000 });
    await itemsAre(page, 2);

    // Muting mention.* in the app: the counts drop, on the other device too,
    // and the list marks them muted. High is muted too; only urgent is not.
    await page.fill('#pref-kind', 'mention.*');
    await page.selectOption('#pref-channel', 'IN_APP');
    await page.uncheck('#pref-enabled');
    await page.click('#preference-form button[type=submit]');
    await page.waitForSelector('li.preference.off[data-pattern="mention.*"][data-channel="IN_APP"]', { timeout: 5000 });
    await other.waitForSelector('li.preference.off[data-pattern="mention.*"]', { timeout: 5000 });
    await countsAre(page, { all: 2, unread: 2, mentions: 0, urgent: 1 });
    await countsAre(other, { all: 2, mentions: 0, urgent: 1 });
    await page.waitForFunction(() => document.querySelectorAll('#list li.item .tag.muted').length === 2, null, { timeout: 5000 });
    const shot = path.join(OUTPUT, 'inbox-tabs.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);

    // Turned back on, they count again.
    await page.getByRole('button', { name: 'Turn mention.* on for In app' }).click();
    await page.waitForSelector('li.preference:not(.off)[data-pattern="mention.*"]', { timeout: 5000 });
    await countsAre(page, { all: 4, unread: 4, mentions: 2, urgent: 2 });
    await page.waitForFunction(() => !document.querySelector('#list li.item .tag.muted'), null, { timeout: 5000 });

    // Reset removes every preference.
    await page.click('#pref-reset');
    await page.waitForSelector('#preference-list >> text=every kind is on', { timeout: 5000 });
    await other.waitForSelector('#preference-list >> text=every kind is on', { timeout: 5000 });
  } catch (error) {
    const shot = path.join(OUTPUT, `failure-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    t.diagnostic(`screenshot of the failure: ${shot}`);
    throw error;
  } finally {
    await page.close();
    await other.close();
  }
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
