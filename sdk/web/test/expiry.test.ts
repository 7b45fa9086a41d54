// Runs in a process of its own, first: UUIDv7s never go back in time within a process, so the
// page "8 days ago" must make the first ids of the process.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type DropReason, InteractionLogger } from '../src/index.js';
import type { memoryBackend } from '../src/storage.js';
import { accepted, mockFetch } from './helpers.js';

test('queue: events older than maxAge (at most 7 days) are dropped as expired, never sent', async () => {
  const server = mockFetch([new TypeError('offline'), accepted(1)]);
  const now = Date.now;
  // A page that queued an event 8 days ago while offline (this process's clock: later ids
  // are never older than earlier ones, so the page starts "then").
  Date.now = () => now() - 8 * 86_400_000;
  const drops: [number, DropReason][] = [];
  let log: InteractionLogger;
  try {
    log = new InteractionLogger({
      endpoint: 'http://ingest.test',
      apiKey: 'k',
      subscriber: 'u1',
      storage: 'memory',
      flushInterval: 1e9,
      maxAge: 30 * 86_400_000, // more than 7 days: 7 days apply
      fetch: server.fetch,
      onDrop: (n, reason) => drops.push([n, reason]),
    });
    log.click('old');
    await log.flush();
    await log.shutdown();
  } finally {
    Date.now = now;
  }
  assert.equal(server.requests.length, 1);
  // Still queued (a memory queue lives in the logger: reuse its backend for the "reload").
  const backend = await (log as unknown as { _q: Promise<ReturnType<typeof memoryBackend>> })._q;
  assert.equal((await backend.keys()).length, 1);
  (log as unknown as { _closed: boolean })._closed = false;
  (log as unknown as { _setMeta(n: string, v: null): void })._setMeta('b', null);
  const fresh = log.click('new');
  await log.flush();
  assert.deepEqual(drops, [[1, 'expired']]);
  assert.deepEqual(server.eventIds().slice(1), [fresh]);
  await log.shutdown();
});
