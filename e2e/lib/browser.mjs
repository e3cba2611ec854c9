// Debian's Chromium driven by playwright-core (never a downloaded browser), with a fresh
// profile per launch, and helpers that read what noVNC drew on its canvas.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { ARTIFACTS_DIR, waitFor } from './processes.mjs';
import { requireBinary } from './stack.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Containers often give /dev/shm only 64 MiB, too little for Chromium's shared memory.
  '--disable-dev-shm-usage',
];

/**
 * Launches Chromium with a fresh user-data dir. Resolves to `{ context, consoleLines, close() }`;
 * `consoleLines` collects every page's console output (noVNC logs failures there).
 * `trustedSpki` lists base64 SHA-256 hashes of public keys whose certificates Chromium accepts
 * without a CA (a test certificate for wss://).
 */
export async function launchBrowser({ trustedSpki = [] } = {}) {
  requireBinary(CHROMIUM, 'install it with `apt-get install chromium` (e2e/run.sh does)');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ws-proxy-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: trustedSpki.length === 0
      ? CHROMIUM_ARGS
      : [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${trustedSpki.join(',')}`],
    viewport: { width: 1024, height: 720 },
    timeout: 60_000,
  });
  const consoleLines = [];
  context.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  return {
    context,
    consoleLines,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens the console page (served at `pageOrigin`) on `consoleUrl`; resolves to the page. With
 * `token`, the page sends it in the bearer subprotocol (the URL then names only the VM).
 */
export async function openConsole(browser, pageOrigin, consoleUrl, { token, page: given } = {}) {
  const page = given ?? browser.context.pages()[0] ?? (await browser.context.newPage());
  const fragment = token ? `#token=${encodeURIComponent(token)}` : '';
  await page.goto(`${pageOrigin}/index.html?url=${encodeURIComponent(consoleUrl)}${fragment}`);
  await page.waitForFunction(() => window.vnc !== undefined);
  return page;
}

/** What the page recorded about noVNC's connection (see page/index.html). */
export function connectionState(page) {
  return page.evaluate(() => ({ ...window.vnc, events: [...window.vnc.events] }));
}

/** Waits until noVNC has connected or disconnected; resolves to the connection state. */
export async function settled(page, limitMs = 30_000) {
  return waitFor(
    'noVNC to connect or disconnect',
    async () => {
      const state = await connectionState(page);
      return state.connected || state.disconnected ? state : null;
    },
    limitMs,
  );
}

/**
 * The framebuffer as noVNC drew it: `{ width, height, pixels }` with `pixels` a plain array of
 * 0xRRGGBB numbers, row by row (the canvas is unscaled, so canvas pixel = framebuffer pixel).
 */
export async function canvasPixels(page) {
  return page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas');
    const { width, height } = canvas;
    const rgba = canvas.getContext('2d').getImageData(0, 0, width, height).data;
    const pixels = new Array(width * height);
    for (let i = 0; i < pixels.length; i += 1) {
      pixels[i] = (rgba[4 * i] << 16) | (rgba[4 * i + 1] << 8) | rgba[4 * i + 2];
    }
    return { width, height, pixels };
  });
}

/** The colour at (x, y) of a `canvasPixels` result. */
export function pixelAt(frame, x, y) {
  return frame.pixels[y * frame.width + x];
}

/** How many pixels of `colour` lie in the rectangle `[x, x+width) x [y, y+height)`. */
export function countColour(frame, colour, { x, y, width, height }) {
  let count = 0;
  for (let row = y; row < y + height; row += 1) {
    for (let column = x; column < x + width; column += 1) {
      if (pixelAt(frame, column, row) === colour) {
        count += 1;
      }
    }
  }
  return count;
}

/** Saves a screenshot of the page as artifacts/{name}.png; resolves to its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** A hex colour for assertion messages. */
export function hex(colour) {
  return colour === undefined ? 'none' : `#${colour.toString(16).padStart(6, '0')}`;
}

/**
 * Opens a plain `new WebSocket(url)` in the page (no noVNC) and resolves to what the browser saw:
 * `{ opened, code, reason, wasClean }`.
 */
export function probeWebSocket(page, consoleUrl) {
  return page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const socket = new WebSocket(url);
        let opened = false;
        socket.binaryType = 'arraybuffer';
        socket.onopen = () => {
          opened = true;
        };
        socket.onclose = (event) =>
          resolve({ opened, code: event.code, reason: event.reason, wasClean: event.wasClean });
      }),
    consoleUrl,
  );
}
