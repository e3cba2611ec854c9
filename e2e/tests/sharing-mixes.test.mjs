// (8) Shared consoles on real QEMU traffic, briefly: each traffic mix (idle prompt, typing, a
// scrolling build log) unshared and shared with one and two noVNC pages (the second joins
// late and takes the shared Tight stream). Both shared pages must show the same pixels; the
// bytes to each browser and from the VM beside the unshared session's are printed (they are
// benchmark figures, published from measure-sharing.mjs's longer runs in docs/sharing.md, not
// thresholds here).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser } from '../lib/browser.mjs';
import { MIXES, SCENARIOS, measure, table } from '../lib/sharing-mixes.mjs';
import { startStaticServer } from '../lib/static-server.mjs';

const MIX_MS = 4_000;
let pages;
let browser;
const results = [];

before(async () => {
  pages = await startStaticServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await pages?.close();
  if (results.length > 0) {
    console.log(`shared consoles on QEMU's mixes (${MIX_MS / 1000} s each):\n${table(results)}`);
  }
});

for (const mix of MIXES) {
  test(`the ${mix.name} mix: two shared noVNC pages show the same pixels`, { timeout: 240_000 }, async () => {
    for (const scenario of SCENARIOS) {
      const result = await measure(mix, scenario, browser, pages, MIX_MS);
      results.push(result);
      assert.ok(result.toBrowserPerSecond.every((bytes) => bytes > 0), JSON.stringify(result));
      if (scenario.viewers === 2) {
        assert.equal(result.samePixels, true, `${mix.name}: the two pages differ`);
      }
    }
  });
}
