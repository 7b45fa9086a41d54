// The <script> bundle: within its size budget, and usable from a plain page.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runInNewContext } from 'node:vm';
import { gzipSync } from 'node:zlib';

const BUDGET = 6144;
// Run from sdk/web (npm test); the bundle is built first.
const code = readFileSync(join(process.cwd(), 'dist', 'interaction-logger.min.js'));

test(`dist/interaction-logger.min.js is at most ${BUDGET} bytes min+gzip`, () => {
  const size = gzipSync(code, { level: 9 }).length;
  console.log(`size of the IIFE: ${code.length} bytes minified, ${size} bytes min+gzip (budget ${BUDGET})`);
  assert.ok(size <= BUDGET, `${size} bytes min+gzip, over the ${BUDGET}-byte budget`);
});

test('a <script> tag gets the class as the global InteractionLogger', async () => {
  const requests: string[] = [];
  const sandbox: Record<string, unknown> = {
    TextEncoder,
    crypto,
    AbortSignal,
    Blob,
    Response,
    CompressionStream,
    setTimeout,
    clearTimeout,
    fetch: (url: string) => {
      requests.push(url);
      return Promise.resolve(new Response('{}', { status: 202 }));
    },
  };
  sandbox.globalThis = sandbox;
  runInNewContext(code.toString(), sandbox);
  const Logger = sandbox.InteractionLogger as new (o: object) => Record<string, (...a: unknown[]) => unknown>;
  assert.equal(typeof Logger, 'function');
  const errors: unknown[] = [];
  const log = new Logger({ endpoint: 'https://e.test', apiKey: 'k', subscriber: 'u', flushInterval: 1e9, onError: (e: unknown) => errors.push(e) });
  for (const name of ['track', 'flush', 'optOut', 'optIn', 'shutdown', 'stats', 'identify', 'impression', 'watchComplete', 'review', 'shareProduct']) {
    assert.equal(typeof log[name], 'function', name);
  }
  assert.match(log.addToWatchlist!('asset') as string, /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  await log.flush!();
  await log.shutdown!();
  assert.deepEqual(errors, []);
  assert.deepEqual(requests, ['https://e.test/api/v1/logs']);
});
