// (4) wss:// served by the proxy itself: noVNC in Chromium connects over TLS with a test
// certificate (made by openssl, trusted through Chromium's SPKI list, no CA installed), then the
// certificate is rotated the way a Kubernetes Secret volume rotates it (a new folder and a
// swapped `..data` symlink): new sessions get the new certificate, the open one continues.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, test } from 'node:test';

import { connectionState, launchBrowser, openConsole, screenshot, settled } from '../lib/browser.mjs';
import { waitFor } from '../lib/processes.mjs';
import { proxyMetrics, scratchDir, startProxy, startSimulator } from '../lib/stack.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { consoleToken } from '../lib/tokens.mjs';

const VMI = 'testvm';
let scratch;
let volume;
let certificates;
let simulator;
let proxy;
let pages;
let browser;

/** A self-signed certificate for 127.0.0.1 and localhost, in `dir`; its PEM and SPKI hash. */
function makeCertificate(dir, name) {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', `/CN=ws-proxy e2e ${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' });
  const pem = readFileSync(certFile, 'utf8');
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return {
    certFile,
    keyFile,
    fingerprint: new X509Certificate(pem).fingerprint256,
    spki: createHash('sha256').update(spki).digest('base64'),
  };
}

/** A Secret volume in `dir`: tls.crt and tls.key link into `..data`, a link to a generation. */
function secretVolume(dir) {
  let generation = 0;
  const install = (certificate) => {
    generation += 1;
    const folder = `..gen${generation}`;
    mkdirSync(path.join(dir, folder));
    for (const [from, to] of [[certificate.certFile, 'tls.crt'], [certificate.keyFile, 'tls.key']]) {
      symlinkSync(from, path.join(dir, folder, to));
    }
    symlinkSync(folder, path.join(dir, '..data_tmp'));
    renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  };
  return {
    install,
    files: { certFile: path.join(dir, 'tls.crt'), keyFile: path.join(dir, 'tls.key') },
    link: () => {
      symlinkSync('..data/tls.crt', path.join(dir, 'tls.crt'));
      symlinkSync('..data/tls.key', path.join(dir, 'tls.key'));
    },
  };
}

/** The SHA-256 fingerprint of the certificate the proxy presents now. */
function presentedFingerprint(port) {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? null);
      socket.end();
    });
    socket.once('error', () => resolve(null));
  });
}

before(async () => {
  scratch = scratchDir('wss');
  const made = path.join(scratch.dir, 'made');
  const secret = path.join(scratch.dir, 'secret');
  mkdirSync(made);
  mkdirSync(secret);
  certificates = [makeCertificate(made, 'first'), makeCertificate(made, 'second')];
  volume = secretVolume(secret);
  volume.install(certificates[0]);
  volume.link();
  simulator = await startSimulator('wss.kubevirt-sim', scratch.dir, [`${VMI}=rfb`]);
  proxy = await startProxy('wss.ws-proxy', simulator, { tls: volume.files });
  pages = await startStaticServer();
  browser = await launchBrowser({ trustedSpki: certificates.map((c) => c.spki) });
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await pages?.close();
  await proxy?.process.stop();
  await simulator?.process.stop();
  scratch?.remove();
});

let firstPage;

test('noVNC connects over wss:// with the proxy\'s own certificate', { timeout: 60_000 }, async () => {
  assert.equal(await presentedFingerprint(proxy.port), certificates[0].fingerprint);
  const url = proxy.consoleUrl(consoleToken(proxy.secret, { vmis: [VMI] }), VMI);
  assert.match(url, /^wss:\/\//);
  firstPage = await openConsole(browser, pages.origin, url);
  const state = await settled(firstPage);
  await screenshot(firstPage, 'wss-first-certificate');
  assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);
});

test('a rotated certificate serves new sessions while the open one continues', {
  timeout: 60_000,
}, async () => {
  volume.install(certificates[1]);
  await waitFor('the proxy to present the rotated certificate', async () =>
    (await presentedFingerprint(proxy.port)) === certificates[1].fingerprint);

  const second = await browser.context.newPage();
  const url = proxy.consoleUrl(consoleToken(proxy.secret, { vmis: [VMI] }), VMI);
  await second.goto(`${pages.origin}/index.html?url=${encodeURIComponent(url)}`);
  await second.waitForFunction(() => window.vnc !== undefined);
  const state = await settled(second);
  await screenshot(second, 'wss-rotated-certificate');
  assert.equal(state.connected, true, `noVNC did not connect: ${JSON.stringify(state)}`);

  const first = await connectionState(firstPage);
  assert.equal(first.connected, true, `the first session ended: ${JSON.stringify(first)}`);
  assert.ok(!first.events.includes('disconnect'), `events: ${first.events}`);

  const metrics = await proxyMetrics(proxy);
  assert.equal(metrics.get('ws_proxy_tls_reloads_total{result="ok"}'), 1);
  assert.equal(metrics.get('ws_proxy_active_sessions'), 2);
});
