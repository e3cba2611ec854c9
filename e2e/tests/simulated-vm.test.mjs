// (1) noVNC in Chromium -> ws-proxy (in-cluster shape) -> kubevirt-sim's built-in RFB console:
// noVNC connects, the canvas shows the simulator's test pattern, and a click and typed keys come
// back drawn on the screen.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  canvasPixels,
  countColour,
  hex,
  launchBrowser,
  openConsole,
  pixelAt,
  screenshot,
  settled,
} from '../lib/browser.mjs';
import { waitFor } from '../lib/processes.mjs';
import { proxyMetrics, scratchDir, startProxy, startSimulator } from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

import {
  BAR_COLOURS,
  HEIGHT,
  PANEL_COLOUR,
  POINTER_COLOUR,
  TEXT_COLOUR,
  TITLE_AREA,
  TYPED_AFTER_PROMPT,
  TYPED_COLOUR,
  typedCell,
  typedGlyph,
  WIDTH,
} from '../lib/sim-console.mjs';

const CLICK_AT = { x: 150, y: 300 };

const VMI = 'testvm';
let scratch;
let simulator;
let proxy;
let pages;
let browser;

before(async () => {
  scratch = scratchDir('simulated');
  simulator = await startSimulator('simulated-vm.kubevirt-sim', scratch.dir, [`${VMI}=rfb`]);
  proxy = await startProxy('simulated-vm.ws-proxy', simulator);
  pages = await startStaticServer();
  browser = await launchBrowser();
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await pages?.close();
  await proxy?.process.stop();
  await simulator?.process.stop();
  scratch?.remove();
});

test('noVNC shows the simulated console and its input round-trips', { timeout: 90_000 }, async () => {
  const token = consoleToken(proxy.secret, { vmis: [VMI, 'another-vm'] });
  // The token travels in the bearer subprotocol; the console URL names only the VM.
  const page = await openConsole(browser, pages.origin, proxy.vmUrl(VMI), { token });

  const state = await settled(page);
  assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
  assert.equal(state.desktopName, `ws-proxy test VM (${VMI})`);

  const pattern = await waitFor('the test pattern on the canvas', async () => {
    const frame = await canvasPixels(page);
    const ready = frame.width === WIDTH && frame.height === HEIGHT &&
      pixelAt(frame, 5, HEIGHT - 5) === PANEL_COLOUR;
    return ready ? frame : null;
  });
  await screenshot(page, 'simulated-vm-connected');
  BAR_COLOURS.forEach((colour, index) => {
    const seen = pixelAt(pattern, index * 100 + 50, 60);
    assert.equal(seen, colour, `bar ${index}: ${hex(seen)} instead of ${hex(colour)}`);
  });
  assert.ok(countColour(pattern, TEXT_COLOUR, TITLE_AREA) > 0, 'the title text is not drawn');
  assert.equal(countColour(pattern, TYPED_COLOUR, TYPED_AFTER_PROMPT), 0, 'typed area not empty');
  assert.notEqual(pixelAt(pattern, CLICK_AT.x, CLICK_AT.y), POINTER_COLOUR);

  // A click (focuses noVNC's canvas and moves the simulated pointer), then typed keys.
  const canvas = await page.locator('#screen canvas').boundingBox();
  await page.mouse.click(canvas.x + CLICK_AT.x, canvas.y + CLICK_AT.y);
  await waitFor('the pointer drawn where the mouse clicked', async () =>
    pixelAt(await canvasPixels(page), CLICK_AT.x, CLICK_AT.y) === POINTER_COLOUR);

  await page.keyboard.type('ws');
  const typed = await waitFor('both typed keys drawn after the prompt', async () => {
    const frame = await canvasPixels(page);
    const drawn = [0, 1].every((cell) => countColour(frame, TYPED_COLOUR, typedCell(cell)) > 0);
    return drawn ? frame : null;
  });
  await screenshot(page, 'simulated-vm-typed');
  // 'w' and 's' are different glyphs: the two cells must not look the same.
  assert.notEqual(typedGlyph(typed, 0), typedGlyph(typed, 1), 'the two typed characters are drawn identically');
  // The bars away from the pointer are untouched.
  assert.equal(pixelAt(typed, 750, 60), BAR_COLOURS[7]);

  const stillConnected = await page.evaluate(() => !window.vnc.disconnected);
  assert.ok(stillConnected, 'noVNC disconnected during the session');

  // One session is open at the proxy; leaving the page ends it, and its bytes in both
  // directions are counted when it ends.
  const live = await proxyMetrics(proxy);
  assert.equal(live.get('ws_proxy_active_sessions'), 1);
  // Chromium offers permessage-deflate and the proxy accepts it: the screen above (a Raw
  // full update, deflated by the proxy) was inflated by the browser.
  assert.equal(live.get('ws_proxy_permessage_deflate_sessions_total'), 1);
  await page.goto('about:blank');
  const ended = await waitFor('the proxy to end the session after the page is gone', async () => {
    const metrics = await proxyMetrics(proxy);
    return metrics.get('ws_proxy_active_sessions') === 0 ? metrics : null;
  });
  assert.ok(ended.get('ws_proxy_relayed_bytes_total{direction="upstream_to_client"}') > 0);
  assert.ok(ended.get('ws_proxy_relayed_bytes_total{direction="client_to_upstream"}') > 0);
});
