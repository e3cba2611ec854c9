// (7) noVNC's own decoders against the encoders a shared console's hub uses for its viewers:
// `cargo test -p proxy-rfb --test novnc_stream -- --ignored` writes, per encoding (Tight with
// restarts, ZRLE, Hextile, zlib, Raw; a shared Tight stream as a member and as a viewer that
// joins half-way receive it), random updates through one encoder and the screen they must leave; here noVNC's decoder classes (core/decoders/*.js, in Node, with a display that
// keeps pixels in memory) decode them in order, and the screen must match to the pixel. This
// is the independent decoder the issue asks for beside proxy-rfb's own: it caught a Tight
// reset that noVNC's zlib (pako) cannot follow.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { E2E_DIR, REPO_DIR } from '../lib/processes.mjs';

// noVNC's logging looks for a browser console.
globalThis.window ??= globalThis;

const DECODERS = {
  tight: 'tight.js',
  'tight-shared': 'tight.js',
  'tight-joiner': 'tight.js',
  zrle: 'zrle.js',
  hextile: 'hextile.js',
  zlib: 'zlib.js',
  raw: 'raw.js',
};

/** The receive queue noVNC's decoders read from (the parts of Websock they use). */
class Queue {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }

  rQwait(_what, count) { return this.bytes.length - this.at < count; }

  rQshift8() { return this.bytes[this.at++]; }

  rQshift16() { const value = this.bytes.readUInt16BE(this.at); this.at += 2; return value; }

  rQshift32() { const value = this.bytes.readUInt32BE(this.at); this.at += 4; return value; }

  rQpeek8() { return this.bytes[this.at]; }

  rQpeekBytes(count) { return new Uint8Array(this.bytes.subarray(this.at, this.at + count)); }

  rQshiftBytes(count) {
    const bytes = new Uint8Array(this.bytes.subarray(this.at, this.at + count));
    this.at += count;
    return bytes;
  }

  rQshiftTo(target, count) {
    target.set(this.bytes.subarray(this.at, this.at + count));
    this.at += count;
  }

  rQskipBytes(count) { this.at += count; }
}

/** A display that keeps RGBX pixels (what the canvas would show). */
class Screen {
  constructor(width, height) {
    this.width = width;
    // Black, as the hub's framebuffer starts.
    this.pixels = new Uint8Array(width * height * 4);
    for (let index = 3; index < this.pixels.length; index += 4) {
      this.pixels[index] = 255;
    }
  }

  fillRect(x, y, width, height, colour) {
    for (let row = y; row < y + height; row += 1) {
      for (let column = x; column < x + width; column += 1) {
        this.pixels.set([colour[0], colour[1], colour[2], 255], (row * this.width + column) * 4);
      }
    }
  }

  blitImage(x, y, width, height, data, offset) {
    for (let row = 0; row < height; row += 1) {
      for (let column = 0; column < width; column += 1) {
        const from = offset + (row * width + column) * 4;
        this.pixels.set(
          [data[from], data[from + 1], data[from + 2], 255],
          ((y + row) * this.width + x + column) * 4,
        );
      }
    }
  }
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'novnc-streams-'));

test('noVNC decodes every encoding the hub writes, to the pixel', { timeout: 600_000 }, async (t) => {
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const written = spawnSync(
    'cargo',
    ['test', '--quiet', '-p', 'proxy-rfb', '--test', 'novnc_stream', '--', '--ignored'],
    { cwd: REPO_DIR, env: { ...process.env, NOVNC_STREAMS_DIR: dir }, stdio: 'inherit' },
  );
  assert.equal(written.status, 0, 'cargo test wrote the streams');
  for (const [name, file] of Object.entries(DECODERS)) {
    // The package exports only its RFB class: the decoders are imported by path.
    const decoderPath = path.join(E2E_DIR, 'node_modules/@novnc/novnc/core/decoders', file);
    const { default: Decoder } = await import(pathToFileURL(decoderPath).href);
    const decoder = new Decoder();
    const data = readFileSync(path.join(dir, `${name}.bin`));
    let at = 0;
    let screen = new Screen(320, 240);
    let updates = 0;
    let restarts = 0;
    for (;;) {
      const tag = data.toString('latin1', at, at + 4);
      at += 4;
      if (tag === 'RSET') {
        restarts += 1;
        continue;
      }
      if (tag === 'DONE') {
        const width = data.readUInt16BE(at);
        const height = data.readUInt16BE(at + 2);
        const expected = data.subarray(at + 4, at + 4 + width * height * 4);
        const differing = expected.findIndex((byte, index) => byte !== screen.pixels[index]);
        assert.equal(differing, -1, `${name}: first differing byte ${differing}`);
        break;
      }
      assert.equal(tag, 'UPDT', `${name}: record at ${at - 4}`);
      const count = data.readUInt32BE(at + 8);
      const length = data.readUInt32BE(at + 12);
      const queue = new Queue(data.subarray(at + 16, at + 16 + length));
      at += 16 + length;
      for (let rect = 0; rect < count; rect += 1) {
        const x = queue.rQshift16();
        const y = queue.rQshift16();
        const width = queue.rQshift16();
        const height = queue.rQshift16();
        queue.rQshift32();
        assert.ok(
          decoder.decodeRect(x, y, width, height, queue, screen, 24),
          `${name}: update ${updates} rectangle ${rect} decoded whole`,
        );
      }
      assert.equal(queue.at, length, `${name}: update ${updates} has no bytes left over`);
      updates += 1;
    }
    assert.ok(updates >= 80, `${name}: ${updates} updates`);
    if (name === 'tight') {
      assert.ok(restarts >= 5, `tight restarted ${restarts} times`);
    }
    screen = null;
  }
});
