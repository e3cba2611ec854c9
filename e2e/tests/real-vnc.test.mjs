// (2) noVNC in Chromium -> ws-proxy (in-cluster shape) -> kubevirt-sim bridging to QEMU's own
// VNC server (the one KubeVirt's virt-launcher runs): noVNC connects and draws QEMU's screen.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  canvasPixels,
  launchBrowser,
  openConsole,
  screenshot,
  settled,
} from '../lib/browser.mjs';
import { waitFor } from '../lib/processes.mjs';
import { scratchDir, startProxy, startQemuVnc, startSimulator } from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

const VMI = 'real';
let scratch;
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
  proxy = await startProxy('real-vnc.ws-proxy', simulator);
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

  const stillConnected = await page.evaluate(() => !window.vnc.disconnected);
  assert.ok(stillConnected, 'noVNC disconnected during the session');
});
