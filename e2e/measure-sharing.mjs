// Measures what a shared console costs beside an unshared one, on real QEMU traffic: for each
// traffic mix of record-traffic.mjs (idle prompt, typing, scrolling build log) it runs, side by
// side in one sitting, an unshared session, a shared console with one viewer and a shared
// console with two (the second joins late, as an instructor does), each with noVNC (default
// settings) in Chromium through the real ws-proxy binary and kubevirt-sim bridged to QEMU.
// Not part of `npm test`: the figures are benchmark figures (docs/sharing.md), not thresholds.
//
//   cd e2e && npm run measure-sharing -- [--seconds N] [--mixes idle,typing,scrolling]
//
// It reports per mix and scenario, per second of the mix:
//   - bytes to each browser: WebSocket payload as the page received it (after
//     permessage-deflate is undone, so before compression), counted in the page;
//   - bytes from the VM: what the proxy read from the console subresource (the relayed
//     upstream-to-client bytes unshared, the hubs' bytes from VMs shared);
//   - the proxy's CPU time (user + system, from /proc);
// and, with two viewers, whether both canvases show the same pixels once the mix is over (QEMU
// is stopped with SIGSTOP for that, so the scrolling guest's screen holds still).
// Results land in artifacts/sharing-bytes.json and as a Markdown table on stdout. Use release
// binaries for the CPU column ($WS_PROXY_BIN, $KUBEVIRT_SIM_BIN).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { launchBrowser } from './lib/browser.mjs';
import { ARTIFACTS_DIR } from './lib/processes.mjs';
import { MIXES, SCENARIOS, measure, table } from './lib/sharing-mixes.mjs';
import { startStaticServer } from './lib/static-server.mjs';

const { values: options } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    mixes: { type: 'string', default: 'idle,typing,scrolling' },
  },
});
const mixMs = Number(options.seconds) * 1000;
if (!(mixMs >= 2_000)) {
  throw new Error(`--seconds ${options.seconds}: expected a number of seconds, 2 or more`);
}

const pages = await startStaticServer();
const browser = await launchBrowser();
const results = [];
try {
  for (const mix of MIXES.filter((candidate) => options.mixes.split(',').includes(candidate.name))) {
    for (const scenario of SCENARIOS) {
      const result = await measure(mix, scenario, browser, pages, mixMs);
      console.log(JSON.stringify(result));
      results.push(result);
    }
  }
} finally {
  await browser.close();
  await pages.close();
}
mkdirSync(ARTIFACTS_DIR, { recursive: true });
writeFileSync(path.join(ARTIFACTS_DIR, 'sharing-bytes.json'), `${JSON.stringify(results, null, 2)}\n`);
console.log(`\n${table(results)}`);
