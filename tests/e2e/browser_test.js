// End-to-end test in a real browser: Debian's headless Chromium, driven by playwright-core (no
// browser download), uses the demo page (web/demo) of a running local cluster like a person would.
// Two pages, pinned to two different gateways, join a room, exchange a room message and a direct
// message through Kafka and the processors, and each shows which gateway the other is on (from
// Redis); a third page goes through HAProxy.
//
// Prints TAP-style lines ("ok - ...", "not ok - ...") and exits 1 if any check failed; after the
// first failure the remaining checks are not run (each depends on the previous ones).
//
// Environment: WSGATE_E2E_WEB_URL (the demo page, e.g. http://127.0.0.1:28090/), WSGATE_NODE_DIR
// (where scripts/setup installed playwright-core), WSGATE_E2E_ARTIFACTS (optional: screenshots and
// page logs go there), WSGATE_CHROMIUM (/usr/bin/chromium).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const nodeDir = process.env.WSGATE_NODE_DIR;
const webUrl = process.env.WSGATE_E2E_WEB_URL;
if (!nodeDir || !webUrl) {
  console.error('browser_test: set WSGATE_NODE_DIR and WSGATE_E2E_WEB_URL (tests/e2e/run does)');
  process.exit(2);
}
const { chromium } = require(path.join(nodeDir, 'node_modules', 'playwright-core'));

const STEP_TIMEOUT_MS = 15000;
const artifacts = process.env.WSGATE_E2E_ARTIFACTS || '';
const run = Date.now().toString(36);
const alice = `alice-${run}`;
const bob = `bob-${run}`;
const carol = `carol-${run}`;
const room = `e2e-${run}`;

let failed = 0;
let passed = 0;

async function check(name, fn) {
  if (failed) {
    console.log(`not ok - ${name} # not run: an earlier check failed`);
    failed++;
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed++;
    console.log(`not ok - ${name}`);
    for (const line of String(err && err.stack ? err.stack : err).split('\n').slice(0, 8)) {
      console.log(`  # ${line}`);
    }
  }
}

// Opens the demo page as `user`, connected through `via` ('gw1', 'gw2' or '' for HAProxy).
async function signIn(page, user, via) {
  const q = new URLSearchParams({ user, room });
  if (via) q.set('via', via);
  await page.goto(`${webUrl}?${q}`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: STEP_TIMEOUT_MS });
  await click(page, '#connect');
  await page.locator('#status', { hasText: `connected as ${user}` }).waitFor({ timeout: STEP_TIMEOUT_MS });
  // Where Redis says this browser's connection is.
  await page.waitForFunction(() => /gw\d+ \(/.test(document.getElementById('me-route').textContent),
    null, { timeout: STEP_TIMEOUT_MS, polling: 50 });
  return page.locator('#me-route').textContent();
}

// Clicks and fills wait for the element to be stable across animation frames, and a tab in the
// background gets few of those: act on the front tab, as a person would.
async function click(page, selector) {
  await page.bringToFront();
  await page.click(selector);
}

async function fill(page, selector, text) {
  await page.bringToFront();
  await page.fill(selector, text);
}

function logLine(page, text) {
  return page.locator('#log li', { hasText: text }).first();
}

// The members table row of `user` once it names `gateway`.
async function memberOn(page, user, gateway) {
  await page.waitForFunction(([u, g]) => {
    const row = document.querySelector(`#members tr[data-user="${CSS.escape(u)}"]`);
    return row && row.children[1].textContent.split(', ').includes(g);
  }, [user, gateway], { timeout: STEP_TIMEOUT_MS, polling: 50 });
}

async function saveArtifacts(pages) {
  if (!artifacts) return;
  fs.mkdirSync(artifacts, { recursive: true });
  for (const [name, page] of Object.entries(pages)) {
    if (!page || page.isClosed()) continue;
    await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true }).catch(() => {});
    const text = await page.evaluate(() => ['status', 'me-route', 'log', 'frames']
      .map((id) => `## ${id}\n${document.getElementById(id).innerText}`).join('\n')).catch((e) => String(e));
    fs.writeFileSync(path.join(artifacts, `${name}.txt`), text);
  }
}

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-chromium-'));
  let context = null;
  const pages = {};
  try {
    await check('Chromium starts headless (Debian package, driven by playwright-core)', async () => {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: process.env.WSGATE_CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          // Three tabs, one in front: keep the others' timers and rendering at full speed.
          '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
          '--disable-backgrounding-occluded-windows'],
        timeout: 60000,
      });
      for (const name of ['alice', 'bob', 'carol']) {
        const page = await context.newPage();
        page.on('console', (m) => m.type() === 'error' && console.log(`  # ${name} console: ${m.text()}`));
        page.on('pageerror', (e) => console.log(`  # ${name} page error: ${e.message}`));
        pages[name] = page;
      }
    });

    await check(`${alice} signs in pinned to gw1 and Redis routes her to gw1`, async () => {
      const where = await signIn(pages.alice, alice, 'gw1');
      if (!where.startsWith('gw1 ')) throw new Error(`me-route says "${where}"`);
    });
    await check(`${bob} signs in pinned to gw2 and Redis routes him to gw2`, async () => {
      const where = await signIn(pages.bob, bob, 'gw2');
      if (!where.startsWith('gw2 ')) throw new Error(`me-route says "${where}"`);
    });
    await check(`both join room ${room}`, async () => {
      await click(pages.alice, '#join');
      await logLine(pages.alice, `joined ${room}`).waitFor({ timeout: STEP_TIMEOUT_MS });
      await click(pages.bob, '#join');
      await logLine(pages.bob, `joined ${room}`).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    await check('each page shows which gateway each member is on', async () => {
      await memberOn(pages.bob, alice, 'gw1');
      await memberOn(pages.bob, bob, 'gw2');
      await memberOn(pages.alice, bob, 'gw2'); // after alice's periodic members refresh
      await memberOn(pages.alice, alice, 'gw1');
    });
    const hello = `hello from ${alice} through the cluster`;
    await check('a room message from gw1 reaches the member on gw2 (and its sender)', async () => {
      await fill(pages.alice, '#text', hello);
      await click(pages.alice, '#say');
      await logLine(pages.bob, `${alice} (gw1): ${hello}`).waitFor({ timeout: STEP_TIMEOUT_MS });
      await logLine(pages.alice, `${alice} (gw1): ${hello}`).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    const psst = `psst ${alice}, ${bob} here`;
    await check('a direct message from gw2 reaches the user on gw1', async () => {
      await fill(pages.bob, '#dm-to', alice);
      await fill(pages.bob, '#dm-text', psst);
      await click(pages.bob, '#dm');
      await logLine(pages.alice, `DM from ${bob} (gw2): ${psst}`).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    await check('a DM to a user who is not connected is not answered (dm_offline=silent)', async () => {
      // The default reveals nothing about who is online; a DM to bob right after shows the
      // connection still works and that the silence is not a lost frame.
      await fill(pages.bob, '#dm-to', `nobody-${run}`);
      await fill(pages.bob, '#dm-text', 'anyone there?');
      await click(pages.bob, '#dm');
      await fill(pages.alice, '#dm-to', bob);
      await fill(pages.alice, '#dm-text', `still here, ${bob}?`);
      await click(pages.alice, '#dm');
      await logLine(pages.bob, `DM from ${alice} (gw1): still here`).waitFor({ timeout: STEP_TIMEOUT_MS });
      if (await logLine(pages.bob, 'error offline').count()) throw new Error('an "offline" answer');
    });
    await check(`${carol} connects through HAProxy, joins, and hears ${alice}`, async () => {
      const where = await signIn(pages.carol, carol, '');
      if (!/^gw\d+ /.test(where)) throw new Error(`me-route says "${where}"`);
      await click(pages.carol, '#join');
      await logLine(pages.carol, `joined ${room}`).waitFor({ timeout: STEP_TIMEOUT_MS });
      const again = `${hello}, again`;
      await fill(pages.alice, '#text', again);
      await click(pages.alice, '#say');
      await logLine(pages.carol, again).waitFor({ timeout: STEP_TIMEOUT_MS });
      await logLine(pages.bob, again).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    await check('leaving and disconnecting close cleanly (code 1000)', async () => {
      for (const name of ['alice', 'bob', 'carol']) {
        const page = pages[name];
        await click(page, '#leave');
        await logLine(page, `left ${room}`).waitFor({ timeout: STEP_TIMEOUT_MS });
        await click(page, '#disconnect');
        await page.locator('#status', { hasText: 'closed: code 1000' }).waitFor({ timeout: STEP_TIMEOUT_MS });
      }
    });
  } finally {
    if (failed) await saveArtifacts(pages);
    else if (artifacts && pages.alice) await saveArtifacts({ alice: pages.alice });
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  console.log(`# browser: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.log(`not ok - browser test crashed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
