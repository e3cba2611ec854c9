// (5) An observer and a student on the same simulated VM, through the real binary: the
// observer's clicks and keys never reach the VM while its screen follows the student's typing;
// the observer's session, recorded because its token asks for it, replays in the project's
// player page (noVNC fed from the file) to the same screen.
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  canvasPixels,
  countColour,
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
  TYPED_COLOUR,
  typedCell as cell,
  typedGlyph as glyph,
  WIDTH,
} from '../lib/sim-console.mjs';

const OBSERVER_CLICK = { x: 150, y: 300 };
const STUDENT_CLICK = { x: 450, y: 250 };

const VMI = 'shared';
let scratch;
let recordings;
let simulator;
let proxy;
let pages;
let browser;

before(async () => {
  scratch = scratchDir('observer');
  recordings = path.join(scratch.dir, 'recordings');
  mkdirSync(recordings);
  simulator = await startSimulator('observer.kubevirt-sim', scratch.dir, [`${VMI}=rfb`]);
  proxy = await startProxy('observer.ws-proxy', simulator, {
    extraArgs: ['--record-dir', recordings, '--record', 'token'],
  });
  pages = await startStaticServer({ recordingsDir: recordings });
  browser = await launchBrowser();
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await pages?.close();
  await proxy?.process.stop();
  await simulator?.process.stop();
  scratch?.remove();
});

async function patternShown(page) {
  return waitFor('the test pattern on the canvas', async () => {
    const frame = await canvasPixels(page);
    return frame.width === WIDTH && pixelAt(frame, 5, HEIGHT - 5) === PANEL_COLOUR ? frame : null;
  });
}

test('an observer watches without typing, and its recording replays the same screen', {
  timeout: 120_000,
}, async () => {
  const observerPage = await openConsole(browser, pages.origin, proxy.vmUrl(VMI), {
    token: consoleToken(proxy.secret, {
      vmis: [VMI],
      console: { role: 'observer', record: true },
    }),
  });
  assert.equal((await settled(observerPage)).connected, true);
  await patternShown(observerPage);
  // The observer clicks and types: none of it may reach the VM.
  const observerCanvas = await observerPage.locator('#screen canvas').boundingBox();
  await observerPage.mouse.click(
    observerCanvas.x + OBSERVER_CLICK.x,
    observerCanvas.y + OBSERVER_CLICK.y,
  );
  await observerPage.keyboard.type('rm');

  const studentPage = await browser.context.newPage();
  await openConsole(browser, pages.origin, proxy.vmUrl(VMI), {
    token: consoleToken(proxy.secret, { vmis: [VMI] }),
    page: studentPage,
  });
  assert.equal((await settled(studentPage)).connected, true);
  await patternShown(studentPage);
  const studentCanvas = await studentPage.locator('#screen canvas').boundingBox();
  await studentPage.mouse.click(studentCanvas.x + STUDENT_CLICK.x, studentCanvas.y + STUDENT_CLICK.y);
  await studentPage.keyboard.type('ok');

  // The observer's screen follows the student's typing (both cells drawn) ...
  const watched = await waitFor('the student\'s keys on the observer\'s screen', async () => {
    const frame = await canvasPixels(observerPage);
    const drawn = [0, 1].every((index) => countColour(frame, TYPED_COLOUR, cell(index)) > 0);
    return drawn && pixelAt(frame, STUDENT_CLICK.x, STUDENT_CLICK.y) === POINTER_COLOUR
      ? frame
      : null;
  });
  await screenshot(observerPage, 'observer-watching');
  // ... and nothing the observer did is on it: 'rm' would have come first, and its click
  // would have moved the pointer.
  assert.equal(countColour(watched, TYPED_COLOUR, cell(2)), 0, 'a third typed character');
  assert.notEqual(pixelAt(watched, OBSERVER_CLICK.x, OBSERVER_CLICK.y), POINTER_COLOUR);
  const student = await canvasPixels(studentPage);
  assert.equal(glyph(student, 0), glyph(watched, 0));
  assert.equal(glyph(student, 1), glyph(watched, 1));
  assert.notEqual(glyph(watched, 0), glyph(watched, 1), "'o' and 'k' differ");

  const metrics = await proxyMetrics(proxy);
  assert.equal(metrics.get('ws_proxy_observer_sessions_total'), 1);
  assert.ok(metrics.get('ws_proxy_observer_input_dropped_total{message="key_event"}') >= 4);
  assert.ok(metrics.get('ws_proxy_observer_input_dropped_total{message="pointer_event"}') >= 1);

  // Leaving the observer's page ends (and closes) its recording; the student's is not recorded.
  await observerPage.goto('about:blank');
  const file = await waitFor('the observer\'s recording to be closed', async () => {
    const names = readdirSync(recordings);
    const closed = names.filter((name) =>
      readFileSync(path.join(recordings, name), 'latin1').includes("'EOF'];"));
    return names.length === 1 && closed.length === 1 ? closed[0] : null;
  });
  assert.match(file, new RegExp(`-session-\\d+-default-${VMI}\\.js$`));

  const replay = await browser.context.newPage();
  await replay.goto(`${pages.origin}/player.html?recording=${encodeURIComponent(`/recordings/${file}`)}`);
  const played = await waitFor('the replay to finish', async () => {
    const state = await replay.evaluate(() => window.player);
    assert.equal(state?.failure ?? null, null, `replay failed: ${state?.failure}`);
    return state?.done ? state : null;
  }, 60_000);
  assert.ok(played.frames > 3, `${played.frames} frames`);
  const replayed = await waitFor('the replayed screen to match the live one', async () => {
    const frame = await canvasPixels(replay);
    return frame.width === WIDTH && glyph(frame, 1) === glyph(watched, 1) ? frame : null;
  });
  await screenshot(replay, 'observer-replayed');
  BAR_COLOURS.forEach((colour, index) => {
    assert.equal(pixelAt(replayed, index * 100 + 50, 60), pixelAt(watched, index * 100 + 50, 60));
    assert.equal(pixelAt(replayed, index * 100 + 50, 60), colour);
  });
  assert.equal(glyph(replayed, 0), glyph(watched, 0));
  assert.equal(pixelAt(replayed, STUDENT_CLICK.x, STUDENT_CLICK.y), POINTER_COLOUR);
  assert.equal(countColour(replayed, TYPED_COLOUR, cell(2)), 0);
});
