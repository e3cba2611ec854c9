// (6) Shared consoles (--share-consoles): a student, an instructor (observer) and a late
// joiner in three noVNC pages on one simulated VM, through the real binary. The VM's console is
// dialled once; everyone sees the same screen; the student's keys appear for all and the
// observer's never; the desktop name counts the viewers; the late joiner sees the typed text at
// once; after everyone left, the next viewer gets a fresh upstream. Then two pages on QEMU's
// own VNC server see the same screen over one upstream.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  canvasPixels,
  connectionState,
  countColour,
  launchBrowser,
  openConsole,
  pixelAt,
  screenshot,
  settled,
} from '../lib/browser.mjs';
import { waitFor } from '../lib/processes.mjs';
import {
  proxyMetrics,
  scratchDir,
  startNginx,
  startProxy,
  startQemuVnc,
  startSimulator,
} from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

import { HEIGHT, PANEL_COLOUR, TYPED_COLOUR, typedCell as cell, typedGlyph as glyph, WIDTH } from '../lib/sim-console.mjs';

const VMI = 'classroom';
const QEMU_VMI = 'qemu';
let scratch;
let qemu;
let simulator;
let proxy;
let pages;
let browser;

before(async () => {
  scratch = scratchDir('sharing');
  qemu = await startQemuVnc('sharing.qemu');
  simulator = await startSimulator('sharing.kubevirt-sim', scratch.dir, [
    `${VMI}=rfb`,
    `${QEMU_VMI}=bridge:127.0.0.1:${qemu.port}`,
  ]);
  proxy = await startProxy('sharing.ws-proxy', simulator, {
    extraArgs: ['--share-consoles', '--share-linger', '500ms'],
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

async function dials() {
  const metrics = await proxyMetrics(proxy);
  return metrics.get('ws_proxy_upstream_connect_seconds_count') ?? 0;
}

async function patternShown(page) {
  return waitFor('the test pattern on the canvas', async () => {
    const frame = await canvasPixels(page);
    return frame.width === WIDTH && pixelAt(frame, 5, HEIGHT - 5) === PANEL_COLOUR ? frame : null;
  });
}

async function join(role, vmi = VMI) {
  const page = await browser.context.newPage();
  const claims = { vmis: [vmi], ...(role === 'observer' ? { console: { role: 'observer' } } : {}) };
  await openConsole(browser, pages.origin, proxy.vmUrl(vmi), {
    token: consoleToken(proxy.secret, claims),
    page,
  });
  const state = await settled(page);
  assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
  return page;
}

function typedCells(frame, count) {
  return [...Array(count).keys()].every((index) => countColour(frame, TYPED_COLOUR, cell(index)) > 0);
}

test('three browsers share one console: one upstream, the same screen, only the student types', {
  timeout: 120_000,
}, async () => {
  const before = await dials();
  const student = await join('control');
  await patternShown(student);
  const instructor = await join('observer');
  await patternShown(instructor);
  assert.equal(await dials(), before + 1, 'one upstream for both');
  await waitFor('the desktop name to count the viewers', async () =>
    (await connectionState(instructor)).desktopName?.endsWith('(2 watching)'));

  // The observer types first: nothing may reach the VM.
  await instructor.keyboard.type('rm');
  await student.locator('#screen canvas').click({ position: { x: 400, y: 300 } });
  await student.keyboard.type('ok');
  const watched = await waitFor('the student\'s keys on the instructor\'s screen', async () => {
    const frame = await canvasPixels(instructor);
    return typedCells(frame, 2) ? frame : null;
  });
  assert.equal(countColour(watched, TYPED_COLOUR, cell(2)), 0, 'the observer\'s keys reached the VM');
  const mine = await canvasPixels(student);
  assert.equal(glyph(mine, 0), glyph(watched, 0));
  assert.equal(glyph(mine, 1), glyph(watched, 1));
  await screenshot(instructor, 'sharing-instructor');

  // A late joiner sees the typed text in its first picture.
  const late = await join('observer');
  const first = await waitFor('the late joiner\'s screen', async () => {
    const frame = await canvasPixels(late);
    return frame.width === WIDTH && typedCells(frame, 2) ? frame : null;
  });
  assert.equal(glyph(first, 1), glyph(watched, 1));
  assert.equal(await dials(), before + 1);
  await screenshot(late, 'sharing-late-joiner');

  // The instructor leaving disturbs nobody; the student goes on typing.
  await instructor.close();
  await student.keyboard.type('!');
  await waitFor('the student\'s third key for the late joiner', async () =>
    typedCells(await canvasPixels(late), 3));
  await waitFor('the desktop name to count two viewers again', async () =>
    (await connectionState(late)).desktopName?.endsWith('(2 watching)'));

  // Everyone leaves; after the linger the next viewer needs a new upstream.
  await student.close();
  await late.close();
  await waitFor('the sessions to end', async () =>
    (await proxyMetrics(proxy)).get('ws_proxy_active_sessions') === 0);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const again = await join('control');
  await patternShown(again);
  assert.equal(await dials(), before + 2, 'a fresh upstream after the last viewer left');
  await again.close();
});

test('two browsers share QEMU\'s VNC server over one upstream and see the same screen', {
  timeout: 120_000,
}, async () => {
  const before = await dials();
  const first = await join('control', QEMU_VMI);
  const second = await join('observer', QEMU_VMI);
  assert.equal(await dials(), before + 1);
  const shown = await waitFor('QEMU\'s screen on both canvases, the same', async () => {
    const [a, b] = [await canvasPixels(first), await canvasPixels(second)];
    const lit = a.pixels.some((pixel) => pixel !== 0);
    const same = a.width === b.width && a.height === b.height
      && a.pixels.every((pixel, index) => pixel === b.pixels[index]);
    return lit && same ? a : null;
  }, 60_000);
  assert.ok(shown.width >= 320, `canvas ${shown.width}x${shown.height}`);
  assert.match((await connectionState(second)).desktopName ?? '', /QEMU/);
  await screenshot(second, 'sharing-qemu');
  await first.close();
  await second.close();
});

test('two replicas behind nginx hashing the path: two viewers of one VM land on one hub', {
  timeout: 120_000,
}, async () => {
  // The replicas share the signing key, as a Deployment's pods do.
  const first = await startProxy('sharing.replica-a', simulator, { extraArgs: ['--share-consoles'] });
  const replicas = [
    first,
    await startProxy('sharing.replica-b', simulator, {
      extraArgs: ['--share-consoles'],
      secret: first.secret,
    }),
  ];
  const nginx = await startNginx('sharing.nginx', scratch.dir, replicas.map((replica) => replica.port));
  const { secret } = first;
  const dialsOf = async () => Promise.all(replicas.map(async (replica) =>
    (await proxyMetrics(replica)).get('ws_proxy_upstream_connect_seconds_count') ?? 0));
  try {
    const open = async (role) => {
      const page = await browser.context.newPage();
      const claims = { vmis: [VMI], ...(role === 'observer' ? { console: { role: 'observer' } } : {}) };
      // The token travels in the bearer subprotocol, so every viewer's URL is /{vmi}.
      await openConsole(browser, pages.origin, nginx.vmUrl(VMI), {
        token: consoleToken(secret, claims),
        page,
      });
      const state = await settled(page);
      assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
      await patternShown(page);
      return page;
    };
    const student = await open('control');
    const instructor = await open('observer');
    const dials = await dialsOf();
    assert.deepEqual(dials.slice().sort(), [0, 1], `dials per replica: ${dials}`);
    await waitFor('the desktop name to count both viewers', async () =>
      (await connectionState(instructor)).desktopName?.endsWith('(2 watching)'));
    await student.close();
    await instructor.close();
  } finally {
    await nginx.process.stop();
    for (const replica of replicas) {
      await replica.process.stop();
    }
  }
});
