// (2) noVNC in Chromium -> ws-proxy (in-cluster shape) -> kubevirt-sim bridging to QEMU's own
// VNC server (the one KubeVirt's virt-launcher runs): noVNC connects and draws QEMU's screen.
// The session is recorded with the client's messages (keys and a resize request included) and
// the recording is kept in artifacts/ as crates/proxy-rfb's corpus of a real QEMU session.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  canvasPixels,
  launchBrowser,
  openConsole,
  screenshot,
  settled,
} from '../lib/browser.mjs';
import { ARTIFACTS_DIR, waitFor } from '../lib/processes.mjs';
import { scratchDir, startProxy, startQemuVnc, startSimulator } from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

const VMI = 'real';
let scratch;
let recordings;
let qemu;
let simulator;
let proxy;
let pages;
let browser;

before(async () => {
  scratch = scratchDir('real-vnc');
  qemu = await startQemuVnc('real-vnc.qemu');
  simulator = await startSimulator('real-vnc.kubevirt-sim', scratch.dir, [
    `${VMI}=bridge:127.0.0.1:${qemu.port}`,
  ]);
  recordings = path.join(scratch.dir, 'recordings');
  mkdirSync(recordings);
  proxy = await startProxy('real-vnc.ws-proxy', simulator, {
    extraArgs: ['--record-dir', recordings, '--record', 'all', '--record-client-input'],
  });
  pages = await startStaticServer();
  browser = await launchBrowser();
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await pages?.close();
  await proxy?.process.stop();
  await simulator?.process.stop();
  await qemu?.process.stop();
  scratch?.remove();
});

/** Distinct colours on the canvas and how many pixels are not black. */
function summarise(frame) {
  const colours = new Set(frame.pixels);
  const lit = frame.pixels.reduce((count, pixel) => count + (pixel !== 0 ? 1 : 0), 0);
  return { width: frame.width, height: frame.height, colours: colours.size, lit };
}

test('noVNC connects to QEMU\'s VNC server through the proxy and draws its screen', {
  timeout: 90_000,
}, async () => {
  const token = consoleToken(proxy.secret, { vmis: [VMI] });
  const page = await openConsole(browser, pages.origin, proxy.vmUrl(VMI), { token });

  const state = await settled(page);
  assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
  assert.match(state.desktopName ?? '', /QEMU/, 'the desktop name QEMU sends');

  // SeaBIOS prints its banner and "No bootable device" in grey on black: the screen is not
  // blank once text is drawn.
  const screen = await waitFor('QEMU\'s screen drawn on the canvas', async () => {
    const summary = summarise(await canvasPixels(page));
    return summary.colours >= 2 && summary.lit > 0 ? summary : null;
  }, 60_000);
  await screenshot(page, 'real-vnc-qemu');
  assert.ok(screen.width >= 320 && screen.height >= 200, `canvas ${screen.width}x${screen.height}`);

  // Keys, a click and a resize request (QEMU answers with ExtendedDesktopSize) go through.
  const canvas = await page.locator('#screen canvas').boundingBox();
  await page.mouse.click(canvas.x + 20, canvas.y + 20);
  await page.keyboard.type('boot');
  await page.evaluate(() => { window.rfb.resizeSession = true; });
  await page.setViewportSize({ width: 900, height: 700 });
  await page.waitForTimeout(500);

  const stillConnected = await page.evaluate(() => !window.vnc.disconnected);
  assert.ok(stillConnected, 'noVNC disconnected during the session');

  await page.goto('about:blank');
  const file = await waitFor('the QEMU session recording to be closed', async () => {
    const closed = readdirSync(recordings).filter((name) =>
      readFileSync(path.join(recordings, name), 'latin1').includes("'EOF'];"));
    return closed.length === 1 ? closed[0] : null;
  });
  const recorded = readFileSync(path.join(recordings, file), 'latin1');
  assert.ok(recorded.includes("\n'{"), 'server messages recorded');
  assert.ok(recorded.includes("\n'}"), 'client messages recorded');
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  copyFileSync(path.join(recordings, file), path.join(ARTIFACTS_DIR, 'real-vnc-recording.js'));
});
