// Two pages of one origin: two loggers sharing one localStorage (the queue, the opt-out, the
// backoff and, without Web Locks, the lease). Runs in a process of its own: it installs
// globals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InteractionLogger, type LoggerOptions } from '../src/index.js';
import { accepted, json, mockFetch, stored, turns } from './helpers.js';

class MemoryStorage {
  private map = new Map<string, string>();
  quota = Infinity;
  get length() {
    return this.map.size;
  }
  key(i: number) {
    return [...this.map.keys()][i] ?? null;
  }
  getItem(k: string) {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    let used = 0;
    for (const [key, value] of this.map) if (key !== k) used += key.length + value.length;
    if (used + k.length + v.length > this.quota) throw new DOMException('full', 'QuotaExceededError');
    this.map.set(k, String(v));
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
  clear() {
    this.map.clear();
  }
}
const storage = new MemoryStorage();
Object.assign(globalThis, { localStorage: storage });

function tab(server: ReturnType<typeof mockFetch>, options: Partial<LoggerOptions> = {}) {
  return new InteractionLogger({
    endpoint: 'https://e.test',
    apiKey: 'k',
    subscriber: 'u',
    storage: 'localstorage',
    batchSize: 5,
    flushInterval: 1e9,
    fetch: server.fetch,
    ...options,
  });
}

async function twoTabsSendEachEventOnce() {
  storage.clear();
  const server = mockFetch([
    async () => {
      // A slow server: the request stays in flight while the pages' other work runs (event-loop
      // turns, not wall-clock time).
      await turns(10);
      return accepted(0);
    },
  ]);
  const a = tab(server);
  const b = tab(server);
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) ids.push((i % 2 ? a : b).click(`asset-${i}`));
  await stored(a, b);
  await Promise.all([a.flush(), b.flush(), a.flush(), b.flush()]);
  await Promise.all([a.flush(), b.flush()]);
  assert.equal(server.maxInFlight, 1, 'one request at a time across the pages');
  assert.deepEqual([...server.eventIds()].sort(), [...ids].sort(), 'each event sent exactly once');
  assert.equal(a.stats().storage, 'localstorage');
  assert.equal(a.stats().pending + b.stats().pending, 0);
  await a.shutdown();
  await b.shutdown();
  assert.deepEqual(Object.keys(Object.fromEntries(Array.from({ length: storage.length }, (_, i) => [storage.key(i), 1]))), [], 'nothing left behind');
}

test('two pages without Web Locks (lease in localStorage): one sender at a time, each event sent once', twoTabsSendEachEventOnce);

test('two pages with Web Locks: one sender at a time, each event sent once', async () => {
  const held = new Set<string>();
  const waiting = new Map<string, (() => void)[]>();
  let requests = 0;
  const locks = {
    async request(name: string, options: { ifAvailable?: boolean }, fn: (lock: object | null) => unknown) {
      requests++;
      if (held.has(name)) {
        if (options.ifAvailable) return fn(null);
        await new Promise<void>((resolve) => waiting.set(name, [...(waiting.get(name) ?? []), resolve]));
      }
      held.add(name);
      try {
        return await fn({ name });
      } finally {
        held.delete(name);
        waiting.get(name)?.shift()?.();
      }
    },
  };
  Object.defineProperty(globalThis, 'navigator', { value: { locks, onLine: true, sendBeacon: () => true }, configurable: true });
  try {
    await twoTabsSendEachEventOnce();
    assert.ok(requests > 0, 'the Web Locks API was used');
  } finally {
    Object.defineProperty(globalThis, 'navigator', { value: undefined, configurable: true });
  }
});

test('the backoff is shared: while one page backs off, the other sends nothing (no storm)', async () => {
  storage.clear();
  const server = mockFetch([json(503, {}, { 'Retry-After': '30' })]);
  const a = tab(server);
  const b = tab(server);
  a.click('x');
  b.click('y');
  await stored(a, b);
  await a.flush();
  assert.equal(server.requests.length, 1);
  await b.flush();
  await a.flush();
  assert.equal(server.requests.length, 1);
  assert.ok(b.stats().backoffMs > 29_000);
  await a.shutdown();
  await b.shutdown();
});

test('opt-out is shared and persisted: a later page starts opted out and clears the queue', async () => {
  storage.clear();
  const server = mockFetch();
  const a = tab(server);
  const b = tab(server);
  b.click('queued in b');
  await stored(b);
  a.optOut();
  assert.equal(b.optedOut, true);
  assert.equal(b.click('z'), '');
  await b.flush();
  const c = tab(server); // a reload
  assert.equal(c.optedOut, true);
  await c.flush();
  assert.equal(server.requests.length, 0);
  c.optIn();
  assert.equal(a.optedOut, false);
  await Promise.all([a.shutdown(), b.shutdown(), c.shutdown()]);
});

test('queued events survive a reload (localStorage backend)', async () => {
  storage.clear();
  const down = mockFetch([new TypeError('offline')]);
  const first = tab(down);
  const ids = [first.play('a'), first.watch('a', 0.5)];
  await first.flush();
  await first.shutdown();
  storage.removeItem('interaction-logger:b'); // the backoff ends
  const up = mockFetch();
  const second = tab(up);
  await second.flush();
  assert.deepEqual(up.eventIds(), ids);
  await second.shutdown();
});

test('a full localStorage (QuotaExceededError): the events are dropped and reported, nothing throws', async () => {
  storage.clear();
  storage.quota = 2000;
  try {
    const server = mockFetch();
    const drops: [number, string][] = [];
    const errors: string[] = [];
    const a = tab(server, { onDrop: (n, r) => drops.push([n, r]), onError: (e) => errors.push(e.name) });
    a.click('x'.repeat(100));
    await stored(a);
    for (let i = 0; i < 20; i++) a.click('y'.repeat(100));
    await stored(a);
    assert.deepEqual(drops, [[20, 'storage']]);
    assert.deepEqual(errors, ['QuotaExceededError']);
    await a.flush();
    assert.equal(server.eventIds().length, 1);
    await a.shutdown();
  } finally {
    storage.quota = Infinity;
  }
});
