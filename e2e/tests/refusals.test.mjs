// (3) Tokens that must not open the console: one for another VM and an expired one. noVNC never
// fires `connect`. With `--reject-style http` the proxy answers 403/401 before the upgrade; in the
// Python original's close style (`close`) the browser's WebSocket opens and is closed with
// 4403/4401 and the original's reason, which noVNC reports; with the default `auto` the browser
// (it sends an Origin header) gets the close and a client without Origin the HTTP status.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  launchBrowser,
  openConsole,
  probeWebSocket,
  screenshot,
  settled,
} from '../lib/browser.mjs';
import {
  proxyMetrics,
  scratchDir,
  startProxy,
  startSimulator,
  upgradeStatus,
} from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

const VMI = 'testvm';
let scratch;
let simulator;
let httpProxy;
let closeProxy;
let autoProxy;
let originProxy;
let pages;
let browser;

before(async () => {
  scratch = scratchDir('refusals');
  simulator = await startSimulator('refusals.kubevirt-sim', scratch.dir, [
    `${VMI}=rfb`,
    'othervm=rfb',
  ]);
  httpProxy = await startProxy('refusals.ws-proxy-http', simulator, { rejectStyle: 'http' });
  closeProxy = await startProxy('refusals.ws-proxy-close', simulator, { rejectStyle: 'close' });
  autoProxy = await startProxy('refusals.ws-proxy-auto', simulator);
  originProxy = await startProxy('refusals.ws-proxy-origin', simulator, {
    allowedOrigins: ['https://lab.example.com'],
  });
  pages = await startStaticServer();
  browser = await launchBrowser();
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await pages?.close();
  await originProxy?.process.stop();
  await autoProxy?.process.stop();
  await closeProxy?.process.stop();
  await httpProxy?.process.stop();
  await simulator?.process.stop();
  scratch?.remove();
});

/** The refused cases: a token with its own expected close code (close style) and status. */
const REFUSALS = [
  {
    name: 'for another VM',
    slug: 'another-vm',
    token: (secret) => mint(secret, { vmis: ['othervm'] }),
    status: 403,
    closeCode: 4403,
    reason: 'invalid token',
  },
  {
    name: 'that has expired',
    slug: 'expired',
    token: (secret) => mint(secret, { vmis: [VMI], lifetimeSeconds: -3600 }),
    status: 401,
    closeCode: 4401,
    // The Python original's close style keeps its reason; the others say what is wrong.
    reason: 'token expired',
    originalReason: 'invalid token',
  },
];
/** The reason `style` gives for `refusal`. */
function reasonOf(refusal, style) {
  return style === 'close' ? (refusal.originalReason ?? refusal.reason) : refusal.reason;
}
/** Every token minted here, to check that none of them reaches the proxies' logs. */
const minted = [];
function mint(secret, options) {
  const token = consoleToken(secret, options);
  minted.push(token);
  return token;
}

/** Opens the console page and waits for noVNC to give up; resolves to the page and state. */
async function refusedInNoVnc(consoleUrl, screenshotName, options = {}) {
  const firstNewLine = browser.consoleLines.length;
  const page = await openConsole(browser, pages.origin, consoleUrl, options);
  const state = await settled(page);
  await screenshot(page, screenshotName);
  assert.equal(state.connected, false, `noVNC connected: ${JSON.stringify(state)}`);
  assert.ok(!state.events.includes('connect'), `events: ${state.events}`);
  assert.equal(state.disconnected, true);
  assert.equal(state.clean, false, 'noVNC must report the disconnect as a failure');
  return { page, state, log: browser.consoleLines.slice(firstNewLine).join('\n') };
}

const STYLES = [
  ['http', () => httpProxy],
  ['close', () => closeProxy],
  ['auto', () => autoProxy],
];

for (const [style, proxyOf] of STYLES) {
  describe(`reject style ${style}`, () => {
    test('a valid token connects (the refusals below are the token\'s doing)', {
      timeout: 60_000,
    }, async () => {
      const proxy = proxyOf();
      const token = mint(proxy.secret, { vmis: [VMI] });
      const page = await openConsole(browser, pages.origin, proxy.consoleUrl(token, VMI));
      const state = await settled(page);
      assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
    });

    for (const refusal of REFUSALS) {
      test(`a token ${refusal.name} does not connect`, { timeout: 60_000 }, async () => {
        const proxy = proxyOf();
        const url = proxy.consoleUrl(refusal.token(proxy.secret), VMI);
        const { page, state, log } = await refusedInNoVnc(url, `refused-${style}-${refusal.slug}`);
        const probe = await probeWebSocket(page, url);
        const reason = reasonOf(refusal, style);

        if (style === 'http') {
          // Refused before the upgrade: the browser only sees a failed handshake (1006), the
          // HTTP answer carries the status and reason.
          assert.equal(probe.opened, false, JSON.stringify(probe));
          assert.equal(probe.code, 1006, JSON.stringify(probe));
          assert.deepEqual(await upgradeStatus(url), { status: refusal.status, body: reason });
          assert.match(log, /WebSocket connection to .* failed/, 'Chromium reports the failure');
          assert.match(state.failure, /Connection closed \(code: 1006\)/);
        } else {
          // The original's behaviour: upgraded, then closed with 4xxx and a reason the page sees.
          assert.deepEqual(probe, {
            opened: true,
            code: refusal.closeCode,
            reason: reason,
            wasClean: true,
          });
          const reported = `code: ${refusal.closeCode}, reason: ${reason}`;
          assert.ok(log.includes(reported), `noVNC did not log the close reason:\n${log}`);
          assert.ok(state.failure.includes(reported), `the page shows: ${state.failure}`);
          if (style === 'close') {
            assert.equal((await upgradeStatus(url)).status, 101);
          } else {
            // auto: a client without an Origin header (not a browser) gets the HTTP status.
            assert.deepEqual(await upgradeStatus(url), { status: refusal.status, body: reason });
          }
        }
      });
    }
  });
}

test('a page from an origin off the allow-list sees why it is refused', { timeout: 60_000 }, async () => {
  // The console page is served from http://127.0.0.1:PORT, not https://lab.example.com.
  const token = mint(originProxy.secret, { vmis: [VMI] });
  const { state } = await refusedInNoVnc(originProxy.vmUrl(VMI), 'refused-origin', { token });
  const reported = 'code: 4403, reason: origin not allowed';
  assert.ok(state.failure.includes(reported), `the page shows: ${state.failure}`);
  // Without an Origin header (not a browser) the same token opens the console.
  assert.equal((await upgradeStatus(originProxy.consoleUrl(token, VMI))).status, 101);
  const metrics = await proxyMetrics(originProxy);
  assert.equal(metrics.get('ws_proxy_rejections_total{reason="origin_not_allowed"}'), 1);
});

test('refused tokens never reached the upstream', { timeout: 30_000 }, async () => {
  for (const proxy of [httpProxy, closeProxy, autoProxy]) {
    const metrics = await proxyMetrics(proxy);
    // Per refusal: noVNC, the plain WebSocket and the raw upgrade request.
    assert.equal(metrics.get('ws_proxy_rejections_total{reason="vm_not_allowed"}'), 3);
    assert.equal(metrics.get('ws_proxy_rejections_total{reason="invalid_token"}'), 3);
    // Only the valid token's console was dialled.
    assert.equal(metrics.get('ws_proxy_upstream_connect_seconds_count'), 1);
  }
});

test('the proxies logged at DEBUG level without any token or secret', { timeout: 30_000 }, async () => {
  for (const proxy of [httpProxy, closeProxy, autoProxy]) {
    await proxy.process.stop();
    const log = readFileSync(proxy.process.logPath, 'utf8');
    assert.match(log, /session/, `${proxy.process.logPath} has no session lines`);
    for (const token of minted) {
      const signature = token.split('.')[2];
      assert.ok(!log.includes(signature), `a token's signature is in ${proxy.process.logPath}`);
    }
    assert.ok(!log.includes(proxy.secret), `SECRET_KEY is in ${proxy.process.logPath}`);
  }
  assert.equal(minted.length, 10);
});
