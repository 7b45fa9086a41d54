// The IndexedDB backend, on fake-indexeddb (an in-memory IndexedDB for Node). Runs in a
// process of its own: it installs globals.
import 'fake-indexeddb/auto';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InteractionLogger, type LoggerOptions } from '../src/index.js';
import { indexedDbBackend, openBackend } from '../src/storage.js';
import { accepted, mockFetch, stored, turns } from './helpers.js';

test('indexeddb backend: sorted keys, get/put/del in transactions, shared by connections', async () => {
  const a = await indexedDbBackend('t1');
  const b = await indexedDbBackend('t1'); // another page's connection
  assert.equal(a.kind, 'indexeddb');
  await a.put([
    ['0002|5', '{"b":1}'],
    ['0001|5', '{"a":1}'],
  ]);
  assert.deepEqual(await b.keys(), ['0001|5', '0002|5']);
  assert.deepEqual(await b.get(['0002|5', 'nope|1']), ['{"b":1}', undefined]);
  await b.del(['0001|5']);
  assert.deepEqual(await a.keys(), ['0002|5']);
});

test('openBackend: auto picks IndexedDB here; memory when asked', async () => {
  assert.equal((await openBackend('auto', 't2')).kind, 'indexeddb');
  assert.equal((await openBackend('memory', 't2')).kind, 'memory');
  // No localStorage in Node: asking for it falls back to memory.
  assert.equal((await openBackend('localstorage', 't2')).kind, 'memory');
});

const options = (server: ReturnType<typeof mockFetch>): LoggerOptions => ({
  endpoint: 'https://e.test',
  apiKey: 'k',
  subscriber: 'u',
  storageName: 'shared',
  batchSize: 5,
  flushInterval: 1e9,
  fetch: server.fetch,
});

test('queued events survive a reload (IndexedDB)', async () => {
  const down = mockFetch([new TypeError('offline')]);
  const first = new InteractionLogger({ ...options(down), storageName: 'reload' });
  const ids = [first.play('a'), first.like('a'), first.review('sku', 2)];
  await first.flush();
  assert.equal(first.stats().storage, 'indexeddb');
  await first.shutdown();
  const up = mockFetch();
  const second = new InteractionLogger({ ...options(up), storageName: 'reload' });
  // The backoff of the first page was in memory (no localStorage here): the second sends at once.
  await second.flush();
  assert.deepEqual(up.eventIds(), ids);
  await second.shutdown();
});

test('two pages on one IndexedDB queue with Web Locks: each event sent once, one request at a time', async () => {
  const held = new Set<string>();
  const waiting: (() => void)[] = [];
  const locks = {
    async request(name: string, opts: { ifAvailable?: boolean }, fn: (lock: object | null) => unknown) {
      while (held.has(name)) {
        if (opts.ifAvailable) return fn(null);
        await new Promise<void>((resolve) => waiting.push(resolve));
      }
      held.add(name);
      try {
        return await fn({ name });
      } finally {
        held.delete(name);
        waiting.shift()?.();
      }
    },
  };
  Object.defineProperty(globalThis, 'navigator', { value: { locks, onLine: true }, configurable: true });
  const server = mockFetch([
    async () => {
      // A slow server: the request stays in flight while the pages' other work runs (event-loop
      // turns, not wall-clock time).
      await turns(10);
      return accepted(0);
    },
  ]);
  const a = new InteractionLogger(options(server));
  const b = new InteractionLogger(options(server));
  const ids: string[] = [];
  for (let i = 0; i < 60; i++) ids.push((i % 3 ? a : b).impression(`asset-${i}`));
  await stored(a, b);
  await Promise.all([a.flush(), b.flush()]);
  await Promise.all([a.flush(), b.flush()]);
  assert.equal(server.maxInFlight, 1);
  assert.deepEqual([...server.eventIds()].sort(), [...ids].sort());
  await Promise.all([a.shutdown(), b.shutdown()]);
});
