// Serves the console page (crates/ws-proxy-demo/page/) and noVNC's ES modules (node_modules/@novnc/novnc/ under
// /novnc/) on 127.0.0.1, read-only, with the MIME types module scripts need.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

import { E2E_DIR } from './processes.mjs';

// The demo binary embeds the same page (crates/ws-proxy-demo/page).
const PAGE_DIR = path.join(E2E_DIR, '..', 'crates', 'ws-proxy-demo', 'page');
const NOVNC_DIR = path.join(E2E_DIR, 'node_modules', '@novnc', 'novnc');

const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** The file a URL path names, or null when it is outside the served folders. */
function resolveFile(urlPath, recordingsDir) {
  const decoded = decodeURIComponent(urlPath);
  const [root, relative] = decoded.startsWith('/novnc/')
    ? [NOVNC_DIR, decoded.slice('/novnc/'.length)]
    : recordingsDir && decoded.startsWith('/recordings/')
      ? [recordingsDir, decoded.slice('/recordings/'.length)]
      : [PAGE_DIR, decoded === '/' ? 'index.html' : decoded.slice(1)];
  const file = path.resolve(root, relative);
  return file.startsWith(root + path.sep) ? file : null;
}

/**
 * Starts the server; resolves to `{ origin, close() }`. With `recordingsDir`, its files are
 * served under /recordings/ (for the replay page).
 */
export async function startStaticServer({ recordingsDir } = {}) {
  const server = http.createServer(async (request, response) => {
    const file = resolveFile(new URL(request.url, 'http://127.0.0.1').pathname, recordingsDir);
    if (request.method !== 'GET' || file === null) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, {
        'Content-Type': MIME_TYPES[path.extname(file)] ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}
