// Child processes for the end-to-end tests: started with a bounded wait for readiness, their
// output kept in artifacts/logs/, and always stopped (SIGTERM, then SIGKILL) by the test that
// started them. Nothing here listens anywhere but 127.0.0.1.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(E2E_DIR, '..');
export const ARTIFACTS_DIR = path.join(E2E_DIR, 'artifacts');
const LOGS_DIR = path.join(ARTIFACTS_DIR, 'logs');

/** Every child still running, so a crashing test process does not leave them behind. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    child.kill('SIGKILL');
  }
});

/**
 * Where the Rust binaries are: $WS_PROXY_BIN / $KUBEVIRT_SIM_BIN, else
 * $CARGO_TARGET_DIR/debug/, else target/debug/ of the workspace.
 */
export function rustBinary(name) {
  const override = process.env[`${name.toUpperCase().replaceAll('-', '_')}_BIN`];
  if (override) {
    return override;
  }
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_DIR, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_DIR, 'target');
  return path.join(targetDir, 'debug', name);
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Whether something accepts TCP connections on 127.0.0.1:port right now. */
export function acceptsConnections(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Polls `check` every 100 ms until it returns a truthy value, which is returned. Fails after
 * `limitMs` (a bound against hangs, not a performance expectation) with `what` in the message.
 */
export async function waitFor(what, check, limitMs = 30_000) {
  const end = Date.now() + limitMs;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > end) {
      throw new Error(`gave up waiting for ${what} after ${limitMs} ms`);
    }
    await sleep(100);
  }
}

/** A started child process; `stop()` ends it and waits for it. */
export class Child {
  constructor(name, child, logPath) {
    this.name = name;
    this.child = child;
    this.logPath = logPath;
    this.stdout = '';
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        running.delete(child);
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
  }

  /** Waits until stdout has a line matching `pattern`; returns the match. */
  async stdoutLine(pattern, limitMs = 30_000) {
    return waitFor(`${this.name} to print ${pattern}`, () => {
      this.assertRunning();
      return this.stdout.match(pattern);
    }, limitMs);
  }

  /** Throws (pointing at the log) if the process has already ended. */
  assertRunning() {
    if (this.exited) {
      throw new Error(
        `${this.name} exited early (${JSON.stringify(this.exited)}); see ${this.logPath}`,
      );
    }
  }

  /** SIGTERM, then SIGKILL if it has not ended after `graceMs`. Returns how it ended. */
  async stop(graceMs = 5_000) {
    if (!this.exited) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exit;
      clearTimeout(timer);
    }
    return this.exited;
  }
}

/**
 * Starts `command` with `args` and exactly `env` (plus PATH), its stdout and stderr copied to
 * artifacts/logs/{name}.log, stdin closed.
 */
export function start(name, command, args, env = {}) {
  mkdirSync(LOGS_DIR, { recursive: true });
  const logPath = path.join(LOGS_DIR, `${name}.log`);
  const log = createWriteStream(logPath);
  log.write(`$ ${command} ${args.join(' ')}\n`);
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const started = new Child(name, child, logPath);
  child.once('error', (error) => {
    log.write(`cannot start: ${error.message}\n`);
    started.exited = { error: error.message };
  });
  child.stdout.on('data', (chunk) => {
    started.stdout += chunk.toString();
    log.write(chunk);
  });
  child.stderr.on('data', (chunk) => log.write(chunk));
  child.once('close', () => log.end());
  return started;
}
