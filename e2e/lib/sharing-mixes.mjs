// What a shared console costs beside an unshared one, on real QEMU traffic: the traffic mixes of
// record-traffic.mjs (idle prompt, typing, scrolling build log) in noVNC pages through the real
// ws-proxy binary and kubevirt-sim bridged to QEMU, unshared and shared with one and two
// viewers. Used by measure-sharing.mjs (the published figures) and tests/sharing-mixes.test.mjs
// (short runs on every change).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { canvasPixels, openConsole, settled } from './browser.mjs';
import { echoGuest, scrollGuest } from './boot-sectors.mjs';
import { waitFor } from './processes.mjs';
import { proxyMetrics, scratchDir, startProxy, startQemuVnc, startSimulator } from './stack.mjs';
import { consoleToken } from './tokens.mjs';

const VMI = 'traffic';
const BOOT_MS = 2_000;
const KEY_HOLD_MS = 70;
const KEY_GAP_MS = 80;
/** Commands typed in the typing mix (no shifted characters: QEMU gets scancodes). */
const COMMANDS = [
  'ls -la /var/log',
  'cat /etc/os-release',
  'cd /srv/app',
  'git status',
  'make -j2 test',
  'tail -n 50 /var/log/syslog',
  'grep -rn timeout /etc/nginx',
  'df -h',
  'ping -c 3 10.0.0.1',
  'systemctl restart nginx',
];

/** Types `COMMANDS` (each followed by Enter) round and round until `deadline`. */
async function typeCommands(page, deadline) {
  for (let index = 0; Date.now() < deadline; index += 1) {
    for (const key of COMMANDS[index % COMMANDS.length]) {
      if (Date.now() >= deadline) {
        return;
      }
      await page.keyboard.press(key === ' ' ? 'Space' : key, { delay: KEY_HOLD_MS });
      await page.waitForTimeout(KEY_GAP_MS);
    }
    await page.keyboard.press('Enter', { delay: KEY_HOLD_MS });
    await page.waitForTimeout(KEY_GAP_MS);
  }
}

function noInput(page, deadline) {
  return page.waitForTimeout(Math.max(0, deadline - Date.now()));
}

/** The traffic mixes of record-traffic.mjs. */
export const MIXES = [
  { name: 'idle', guest: echoGuest, run: noInput },
  { name: 'typing', guest: echoGuest, run: typeCommands },
  { name: 'scrolling', guest: scrollGuest, run: noInput },
];

/** Unshared, shared with one viewer, shared with two (the second joins late). */
export const SCENARIOS = [
  { name: 'unshared', shared: false, viewers: 1 },
  { name: 'shared, 1 viewer', shared: true, viewers: 1 },
  { name: 'shared, 2 viewers', shared: true, viewers: 2 },
];

/** The proxy's CPU seconds so far (user + system). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the command.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Opens a noVNC page on the console, counting the WebSocket payload bytes it receives. */
async function openViewer(browser, pages, proxy, role) {
  const page = await browser.context.newPage();
  const received = { bytes: 0, messages: 0 };
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      console.error(`browser (${role}): ${message.text()}`);
    }
  });
  page.on('websocket', (socket) => {
    socket.on('framereceived', ({ payload }) => {
      received.bytes += typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
      received.messages += 1;
    });
  });
  const claims = { vmis: [VMI], ...(role === 'observer' ? { console: { role: 'observer' } } : {}) };
  await openConsole(browser, pages.origin, proxy.vmUrl(VMI), {
    token: consoleToken(proxy.secret, claims),
    page,
  });
  const state = await settled(page);
  if (!state.connected) {
    throw new Error(`noVNC did not connect: ${JSON.stringify(state)}`);
  }
  await waitFor('QEMU\'s screen drawn on the canvas', async () => {
    const frame = await canvasPixels(page);
    return new Set(frame.pixels).size >= 2;
  }, 60_000);
  return { page, received };
}

async function fromVm(proxy, shared) {
  const metrics = await proxyMetrics(proxy);
  return shared
    ? metrics.get('ws_proxy_shared_console_from_vms_bytes_total') ?? 0
    : metrics.get('ws_proxy_relayed_bytes_total{direction="upstream_to_client"}') ?? 0;
}

/** Waits (up to 10 s: a cursor may blink between two reads) for both canvases to agree. */
async function samePixels(first, second) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const [a, b] = [await canvasPixels(first), await canvasPixels(second)];
    if (a.width === b.width && a.height === b.height
      && a.pixels.every((pixel, index) => pixel === b.pixels[index])) {
      return true;
    }
    await new Promise((resolve) => { setTimeout(resolve, 100); });
  }
  return false;
}

/**
 * Runs `mix` for `mixMs` in `scenario` on a fresh QEMU, kubevirt-sim and ws-proxy; resolves to
 * the bytes per second to each browser and from the VM, the proxy's CPU seconds and (two
 * viewers) whether both canvases show the same pixels afterwards.
 */
export async function measure(mix, scenario, browser, pages, mixMs) {
  const scratch = scratchDir(`measure-${mix.name}`);
  const stack = [];
  try {
    const disk = path.join(scratch.dir, `${mix.name}.img`);
    writeFileSync(disk, mix.guest());
    const qemu = await startQemuVnc(`measure-${mix.name}.qemu`, { disk });
    stack.push(qemu);
    const simulator = await startSimulator(`measure-${mix.name}.kubevirt-sim`, scratch.dir, [
      `${VMI}=bridge:127.0.0.1:${qemu.port}`,
    ]);
    stack.push(simulator);
    const proxy = await startProxy(`measure-${mix.name}.ws-proxy`, simulator, {
      extraArgs: scenario.shared ? ['--share-consoles'] : [],
    });
    stack.push(proxy);
    const viewers = [await openViewer(browser, pages, proxy, 'control')];
    await viewers[0].page.waitForTimeout(BOOT_MS);
    if (scenario.viewers === 2) {
      viewers.push(await openViewer(browser, pages, proxy, 'observer'));
    }
    await viewers[0].page.evaluate(() => window.rfb.focus());
    // The live counters are booked every second: let the join settle into them.
    await viewers[0].page.waitForTimeout(1_500);
    const pid = proxy.process.child.pid;
    const start = {
      cpu: cpuSeconds(pid),
      vm: await fromVm(proxy, scenario.shared),
      browsers: viewers.map((viewer) => viewer.received.bytes),
      at: Date.now(),
    };
    await mix.run(viewers[0].page, Date.now() + mixMs);
    const seconds = (Date.now() - start.at) / 1000;
    const browsers = viewers.map((viewer, index) => viewer.received.bytes - start.browsers[index]);
    const cpu = cpuSeconds(pid) - start.cpu;
    // The counters are booked every second; wait for the last booking.
    await viewers[0].page.waitForTimeout(1_500);
    const vm = (await fromVm(proxy, scenario.shared)) - start.vm;
    // The scrolling guest never stops: freeze QEMU so that both canvases can settle on the
    // last screen it sent.
    process.kill(qemu.process.child.pid, 'SIGSTOP');
    let same;
    try {
      same = viewers.length === 2 ? await samePixels(viewers[0].page, viewers[1].page) : null;
    } finally {
      process.kill(qemu.process.child.pid, 'SIGCONT');
    }
    for (const viewer of viewers) {
      await viewer.page.close();
    }
    return {
      mix: mix.name,
      scenario: scenario.name,
      seconds,
      toBrowserPerSecond: browsers.map((bytes) => Math.round(bytes / seconds)),
      fromVmPerSecond: Math.round(vm / seconds),
      proxyCpuSeconds: cpu,
      samePixels: same,
    };
  } finally {
    for (const part of stack.reverse()) {
      await part.process.stop();
    }
    scratch.remove();
  }
}


/** The results as a Markdown table, each figure beside the unshared session's. */
export function table(results) {
  const lines = [
    '| mix | scenario | to each browser, B/s (x unshared) | from the VM, B/s (x unshared) | proxy CPU s | same pixels |',
    '|---|---|---|---|---|---|',
  ];
  const baseline = (mix) => results.find((result) => result.mix === mix && result.scenario === 'unshared');
  for (const result of results) {
    const base = baseline(result.mix);
    const ratio = (value, of) => (of > 0 ? `${(value / of).toFixed(2)}x` : 'n/a');
    const browsers = result.toBrowserPerSecond
      .map((value) => `${value.toLocaleString('en')} (${ratio(value, base?.toBrowserPerSecond[0] ?? 0)})`)
      .join(', ');
    lines.push(`| ${result.mix} | ${result.scenario} | ${browsers} | ${result.fromVmPerSecond.toLocaleString('en')} (${ratio(result.fromVmPerSecond, base?.fromVmPerSecond ?? 0)}) | ${result.proxyCpuSeconds.toFixed(2)} | ${result.samePixels ?? '-'} |`);
  }
  return lines.join('\n');
}
