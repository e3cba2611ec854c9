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

// kubevirt_sim::rfb::console constants (crates/kubevirt-sim/src/rfb/console.rs).
const BAR_COLOURS = [
  0xffffff, 0xffff00, 0x00ffff, 0x00ff00, 0xff00ff, 0xff0000, 0x0000ff, 0x000000,
];
const PANEL_COLOUR = 0x102040;
const TEXT_COLOUR = 0xf0f0f0;
const TYPED_COLOUR = 0x40ff40;
const POINTER_COLOUR = 0xff8000;
const WIDTH = 800;
const HEIGHT = 600;
const PANEL_TOP = HEIGHT - 240;
const MARGIN = 20;
// Text is the 5x7 font in 6x8 cells at scale 2; the typed line starts with "> ".
const TEXT_CELL = { width: 12, height: 16 };
const TITLE_AREA = { x: MARGIN, y: PANEL_TOP + 12, width: 16 * 18, height: 8 * 3 };
const TYPED_AFTER_PROMPT = {
  x: MARGIN + 2 * TEXT_CELL.width,
  y: PANEL_TOP + 120,
  width: 2 * TEXT_CELL.width,
  height: TEXT_CELL.height,
};
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
  const cellArea = (cell) => ({
    ...TYPED_AFTER_PROMPT,
    x: TYPED_AFTER_PROMPT.x + cell * TEXT_CELL.width,
    width: TEXT_CELL.width,
  });
  const typed = await waitFor('both typed keys drawn after the prompt', async () => {
    const frame = await canvasPixels(page);
    const drawn = [0, 1].every((cell) => countColour(frame, TYPED_COLOUR, cellArea(cell)) > 0);
    return drawn ? frame : null;
  });
  await screenshot(page, 'simulated-vm-typed');
  // 'w' and 's' are different glyphs: the two cells must not look the same.
  const glyph = (cell) => {
    const { x, y, width, height } = cellArea(cell);
    const mask = [];
    for (let row = y; row < y + height; row += 1) {
      for (let column = x; column < x + width; column += 1) {
        mask.push(pixelAt(typed, column, row) === TYPED_COLOUR ? 1 : 0);
      }
    }
    return mask.join('');
  };
  assert.notEqual(glyph(0), glyph(1), 'the two typed characters are drawn identically');
  // The bars away from the pointer are untouched.
  assert.equal(pixelAt(typed, 750, 60), BAR_COLOURS[7]);

  const stillConnected = await page.evaluate(() => !window.vnc.disconnected);
  assert.ok(stillConnected, 'noVNC disconnected during the session');

  // One session is open at the proxy; leaving the page ends it, and its bytes in both
  // directions are counted when it ends.
  assert.equal((await proxyMetrics(proxy)).get('ws_proxy_active_sessions'), 1);
  await page.goto('about:blank');
  const ended = await waitFor('the proxy to end the session after the page is gone', async () => {
    const metrics = await proxyMetrics(proxy);
    return metrics.get('ws_proxy_active_sessions') === 0 ? metrics : null;
  });
  assert.ok(ended.get('ws_proxy_relayed_bytes_total{direction="upstream_to_client"}') > 0);
  assert.ok(ended.get('ws_proxy_relayed_bytes_total{direction="client_to_upstream"}') > 0);
});
