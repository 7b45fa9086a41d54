import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expired, keyBytes, keyTime, memoryBackend, overflow } from '../src/storage.js';
import { uuidv7 } from '../src/uuid.js';
import { make, mockFetch, stored } from './helpers.js';

const key = (n: number, bytes: number) => `${String(n).padStart(36, '0')}|${bytes}`;

test('overflow: how many of the oldest go, by count and by bytes', () => {
  const keys = Array.from({ length: 10 }, (_, i) => key(i, 100));
  assert.equal(keyBytes(keys[0]!), 100);
  assert.equal(overflow(keys, 10, 1000), 0);
  assert.equal(overflow(keys, 7, 1_000_000), 3);
  assert.equal(overflow(keys, 100, 450), 6);
  assert.equal(overflow(keys, 8, 450), 6, 'the tighter bound wins');
  assert.equal(overflow([key(0, 5000)], 10, 1000), 1, 'an event over the byte cap alone goes too');
  assert.equal(overflow([], 0, 0), 0);
});

test('memory backend: sorted keys, get/put/del', async () => {
  const b = memoryBackend();
  await b.put([[key(2, 1), 'b'], [key(1, 1), 'a']]);
  assert.deepEqual(await b.keys(), [key(1, 1), key(2, 1)]);
  assert.deepEqual(await b.get([key(1, 1), key(3, 1)]), ['a', undefined]);
  await b.del([key(1, 1)]);
  assert.deepEqual(await b.keys(), [key(2, 1)]);
});

test('queue: bounded by maxQueue, the oldest dropped and reported (one write)', async () => {
  const server = mockFetch();
  const { log, drops } = make({ maxQueue: 5 }, server);
  const ids = Array.from({ length: 8 }, (_, i) => log.track({ assetId: `a${i}`, action: 'impression' }));
  await stored(log);
  assert.deepEqual(drops, [[3, 'overflow']]);
  // The five newest arrive, oldest first.
  await log.flush();
  assert.deepEqual(server.eventIds(), ids.slice(3));
  assert.equal(log.stats().dropped, 3);
  await log.shutdown();
});

test('queue: bounded by maxQueue across writes (what is stored counts)', async () => {
  const server = mockFetch();
  const { log, drops } = make({ maxQueue: 5 }, server);
  const first = [0, 1, 2, 3].map((i) => log.track({ assetId: `a${i}`, action: 'click' }));
  await stored(log); // the first write is done: the second is another one
  const second = [4, 5, 6, 7].map((i) => log.track({ assetId: `a${i}`, action: 'click' }));
  await stored(log);
  assert.deepEqual(drops, [[3, 'overflow']]);
  await log.flush();
  assert.deepEqual(server.eventIds(), [...first, ...second].slice(3));
  await log.shutdown();
});

test('queue: bounded by maxQueueBytes, oldest first', async () => {
  const server = mockFetch();
  // The byte counts below are those of events with subscriber 'u1'.
  const { log, drops } = make({ maxQueueBytes: 2000, subscriber: 'u1' }, server);
  const ids = Array.from({ length: 30 }, (_, i) => log.track({ assetId: `asset-${i}`, action: 'like', comment: 'x'.repeat(100) }));
  await stored(log);
  const dropped = drops.reduce((a, [n]) => a + n, 0);
  assert.ok(dropped > 0 && drops.every(([, r]) => r === 'overflow'));
  await log.flush();
  const sent = server.requests.flatMap((r) => r.json.batch);
  assert.deepEqual(server.eventIds(), ids.slice(dropped), 'the newest kept, in order');
  const bytes = sent.reduce((a, e) => a + Buffer.byteLength(JSON.stringify(e)), 0);
  assert.ok(bytes <= 2000, `${bytes} bytes kept`);
  assert.ok(bytes + 250 > 2000, 'and no more dropped than needed');
  await log.shutdown();
});

test('queue: kept while the server is unreachable, sent once it is back', async (t) => {
  // Mock clock and timers: the backoff passes when the test says so.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  let up = false;
  const server = mockFetch([() => (up ? new Response('{}', { status: 202 }) : new TypeError('fetch failed'))]);
  const { log, drops } = make({}, server);
  const random = Math.random;
  Math.random = () => 0; // backoff at its floor (100 ms)
  try {
    const ids = [1, 2, 3].map((i) => log.track({ assetId: `a${i}`, action: 'play' }));
    await log.flush();
    assert.equal(server.requests.length, 1);
    assert.equal(log.stats().pending, 3);
    up = true;
    t.mock.timers.tick(log.stats().backoffMs); // the 100 ms floor
    await log.flush();
    assert.equal(server.requests.length, 2);
    assert.deepEqual(server.requests[1]!.json.batch.map((e) => e.eventId), ids);
    assert.equal(log.stats().pending, 0);
    assert.deepEqual(drops, []);
  } finally {
    Math.random = random;
    await log.shutdown();
  }
});

test('expired: the oldest keys tracked before a time (the UUIDv7 timestamp)', () => {
  const t = Date.now() + 20_000_000;
  const keys = [uuidv7(t), uuidv7(t + 1000), uuidv7(t + 2000)].map((id) => `${id}|10`);
  assert.equal(keyTime(keys[0]!), t);
  assert.equal(expired(keys, t), 0);
  assert.equal(expired(keys, t + 1), 1);
  assert.equal(expired(keys, t + 1500), 2);
  assert.equal(expired(keys, t + 1e9), 3);
});
