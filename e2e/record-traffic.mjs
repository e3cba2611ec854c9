// Records real QEMU VNC console traffic through ws-proxy for three traffic mixes, for the
// performance study (scripts/console-traffic.py derives a traffic profile from each recording
// and what WebSocket permessage-deflate would save on it). Not part of `npm test`.
//
//   cd e2e && npm run record-traffic -- [--out DIR] [--seconds N]
//
// needs Debian's chromium and qemu-system-x86, `npm ci`, and the ws-proxy and kubevirt-sim
// binaries (target/debug/, or $WS_PROXY_BIN and $KUBEVIRT_SIM_BIN). For each mix it boots QEMU
// (SeaBIOS, a boot-sector guest from lib/boot-sectors.mjs on an IDE disk), bridges it through
// kubevirt-sim, opens the console in noVNC (default settings, hence its default encodings) in
// Chromium through ws-proxy, which records the session with `--record all
// --record-client-input`, and runs the mix for N seconds (default 20) from 2 s after the first
// screen is drawn (SeaBIOS boots the guest in that time). Mixes:
//   idle       echo guest, no input: a prompt with a blinking cursor;
//   typing     echo guest, shell commands typed at ~6-7 keys/s (each held 70 ms, 80 ms apart);
//   scrolling  scroll guest: a build log scrolling by, one line every ~50 ms, no input.
// The recordings (noVNC's player format) land in DIR (default artifacts/traffic/) as idle.js,
// typing.js and scrolling.js, with screenshots of the console (MIX.png, and MIX-start.png from
// the mix's first second, which shows that the screen moved on).
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { canvasPixels, launchBrowser, openConsole, settled } from './lib/browser.mjs';
import { ARTIFACTS_DIR, waitFor } from './lib/processes.mjs';
import { MIXES } from './lib/sharing-mixes.mjs';
import { scratchDir, startProxy, startQemuVnc, startSimulator } from './lib/stack.mjs';
import { startStaticServer } from './lib/static-server.mjs';
import { consoleToken } from './lib/tokens.mjs';

const VMI = 'traffic';
/** Time SeaBIOS gets to boot the guest after the first screen is drawn. */
const BOOT_MS = 2_000;

const { values: options } = parseArgs({
  options: {
    out: { type: 'string', default: path.join(ARTIFACTS_DIR, 'traffic') },
    seconds: { type: 'string', default: '20' },
  },
});
const outDir = path.resolve(options.out);
const mixMs = Number(options.seconds) * 1000;
if (!(mixMs > 1_000)) {
  throw new Error(`--seconds ${options.seconds}: expected a number of seconds above 1`);
}


/** Boots the mix's guest, records one noVNC session on it, returns the recording's path. */
async function recordMix(mix, browser, pages) {
  const scratch = scratchDir(`traffic-${mix.name}`);
  const stack = [];
  try {
    const disk = path.join(scratch.dir, `${mix.name}.img`);
    writeFileSync(disk, mix.guest());
    const qemu = await startQemuVnc(`traffic-${mix.name}.qemu`, { disk });
    stack.push(qemu);
    const simulator = await startSimulator(`traffic-${mix.name}.kubevirt-sim`, scratch.dir, [
      `${VMI}=bridge:127.0.0.1:${qemu.port}`,
    ]);
    stack.push(simulator);
    const recordings = path.join(scratch.dir, 'recordings');
    mkdirSync(recordings);
    const proxy = await startProxy(`traffic-${mix.name}.ws-proxy`, simulator, {
      extraArgs: ['--record-dir', recordings, '--record', 'all', '--record-client-input'],
    });
    stack.push(proxy);

    const page = await browser.context.newPage();
    const token = consoleToken(proxy.secret, { vmis: [VMI] });
    await openConsole(browser, pages.origin, proxy.vmUrl(VMI), { token, page });
    const state = await settled(page);
    if (!state.connected) {
      throw new Error(`noVNC did not connect: ${JSON.stringify(state)}`);
    }
    await waitFor('QEMU\'s screen drawn on the canvas', async () => {
      const frame = await canvasPixels(page);
      return new Set(frame.pixels).size >= 2;
    }, 60_000);
    await page.waitForTimeout(BOOT_MS);
    // Keys go to noVNC's canvas; focusing it directly sends no pointer events.
    await page.evaluate(() => window.rfb.focus());
    const deadline = Date.now() + mixMs;
    const running = mix.run(page, deadline);
    await page.waitForTimeout(1_000);
    await page.screenshot({ path: path.join(outDir, `${mix.name}-start.png`) });
    await running;
    await page.screenshot({ path: path.join(outDir, `${mix.name}.png`) });
    if (await page.evaluate(() => window.vnc.disconnected)) {
      throw new Error('noVNC disconnected during the mix');
    }
    await page.close();

    const file = await waitFor('the session recording to be closed', async () => {
      const closed = readdirSync(recordings).filter((name) =>
        readFileSync(path.join(recordings, name), 'latin1').includes("'EOF'];"));
      return closed.length === 1 ? closed[0] : null;
    });
    const target = path.join(outDir, `${mix.name}.js`);
    copyFileSync(path.join(recordings, file), target);
    return target;
  } finally {
    for (const part of stack.reverse()) {
      await part.process.stop();
    }
    scratch.remove();
  }
}

mkdirSync(outDir, { recursive: true });
const pages = await startStaticServer();
const browser = await launchBrowser();
try {
  for (const mix of MIXES) {
    const file = await recordMix(mix, browser, pages);
    console.log(`${mix.name}: ${file} (${readFileSync(file).length} bytes)`);
  }
} finally {
  await browser.close();
  await pages.close();
}
