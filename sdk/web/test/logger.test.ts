import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ACTIONS, InteractionLogger } from '../src/index.js';
import { accepted, deferred, idle, json, make, mockFetch, turns, until } from './helpers.js';

/** Math.random at 0 for the duration: every backoff is at its 100 ms floor. */
async function withNoJitter(fn: () => Promise<void>) {
  const random = Math.random;
  Math.random = () => 0;
  try {
    await fn();
  } finally {
    Math.random = random;
  }
}

test('a request: POST {endpoint}/api/v1/logs, JSON, X-API-Key, sentAt, the server schema', async () => {
  const { log, server } = make();
  const before = Date.now();
  const id = log.track({ assetId: 'asset-1', action: 'watch', progress: 0.9, comment: 'c', contextId: 'ctx' });
  const at = new Date('2026-01-02T03:04:05.678Z');
  log.track({ assetId: 'asset-2', interaction: 'select', ratingEquivalent: 0.25, subscriber: 'other', timestamp: at });
  await log.flush();
  assert.equal(server.requests.length, 1);
  const [request] = server.requests;
  assert.equal(request!.url, 'http://ingest.test/api/v1/logs');
  assert.equal(request!.headers['content-type'], 'application/json');
  assert.equal(request!.headers['x-api-key'], 'public-write-key');
  assert.equal(request!.headers['content-encoding'], undefined, 'small bodies are not gzipped');
  assert.equal(request!.keepalive, false);
  assert.deepEqual(Object.keys(request!.json), ['sentAt', 'batch']);
  const sentAt = Date.parse(request!.json.sentAt);
  assert.ok(sentAt >= before && sentAt <= Date.now());
  const [first, second] = request!.json.batch;
  assert.deepEqual(first, {
    eventId: id,
    timestamp: first!.timestamp,
    subscriber: 'user-123',
    assetId: 'asset-1',
    action: 'watch',
    progress: 0.9,
    comment: 'c',
    contextId: 'ctx',
    setting: { device: 'web' },
  });
  assert.match(String(first.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(second, {
    eventId: second!.eventId,
    timestamp: '2026-01-02T03:04:05.678Z',
    subscriber: 'other',
    assetId: 'asset-2',
    interaction: 'select',
    ratingEquivalent: 0.25,
    setting: { device: 'web' },
  });
  assert.deepEqual(log.stats(), { storage: 'memory', pending: 0, sent: 2, dropped: 0, requests: 1, failures: 0, backoffMs: 0 });
  await log.shutdown();
});

test('batching by size: batchSize tracked events start a send at once', async () => {
  const { log, server } = make({ batchSize: 3 });
  log.track({ assetId: 'a', action: 'click' });
  log.track({ assetId: 'b', action: 'click' });
  await idle(log); // both stored, no send cycle running: none will start by itself
  assert.equal(server.requests.length, 0);
  log.track({ assetId: 'c', action: 'click' });
  await until(() => server.requests.length === 1);
  assert.equal(server.requests[0]!.json.batch.length, 3);
  await log.shutdown();
});

test('batching by time: what is queued goes every flushInterval', async (t) => {
  // Mock timers: the flushInterval elapses when the test says so, not on the wall clock.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  const { log, server } = make({ flushInterval: 300 });
  log.track({ assetId: 'a', action: 'impression' });
  log.track({ assetId: 'b', action: 'impression' });
  await idle(log);
  t.mock.timers.tick(299);
  await idle(log);
  assert.equal(server.requests.length, 0, 'nothing before flushInterval');
  t.mock.timers.tick(1);
  await until(() => server.requests.length === 1);
  await idle(log);
  t.mock.timers.tick(300); // the next interval: nothing left to send
  await idle(log);
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]!.json.batch.length, 2);
  await log.shutdown();
});

test('one request in flight: batches go one after another, each event once', async () => {
  const gates: ReturnType<typeof deferred<void>>[] = [];
  const server = mockFetch([
    async () => {
      const gate = deferred<void>();
      gates.push(gate);
      await gate.promise;
      return accepted(0);
    },
  ]);
  const { log } = make({ batchSize: 4 }, server);
  const ids = Array.from({ length: 10 }, (_, i) => log.track({ assetId: `a${i}`, action: 'click' }));
  const flushed = log.flush();
  for (let i = 0; i < 3; i++) {
    await until(() => gates.length === i + 1);
    await turns(); // the cycle is parked on the unanswered request: let everything else run
    assert.equal(gates.length, i + 1, 'the next request waits for the previous answer');
    gates[i]!.resolve();
  }
  await flushed;
  assert.equal(server.maxInFlight, 1);
  assert.deepEqual(server.requests.map((r) => r.json.batch.length), [4, 4, 2]);
  assert.deepEqual(server.eventIds(), ids);
  await log.shutdown();
});

test('gzip: bodies over 1 KiB are compressed (Content-Encoding: gzip); gzip: false turns it off', async () => {
  for (const gzip of [true, false]) {
    const { log, server } = make({ gzip });
    const ids = Array.from({ length: 20 }, (_, i) => log.track({ assetId: `asset-${i}`, action: 'impression' }));
    await log.flush();
    const [request] = server.requests;
    assert.equal(request!.headers['content-encoding'], gzip ? 'gzip' : undefined);
    assert.deepEqual(server.eventIds(), ids);
    if (gzip) assert.ok(request!.size < Buffer.byteLength(request!.text) / 3, 'compressed');
    await log.shutdown();
  }
});

test('503 with Retry-After: kept, no request before Retry-After, then sent again with the same eventIds', async (t) => {
  // Mock clock and timers: the Retry-After interval passes when the test says so.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  const server = mockFetch([json(503, { status: 'error', message: 'the database is unavailable' }, { 'Retry-After': '1' }), accepted(2)]);
  const { log, errors } = make({}, server);
  const ids = [log.track({ assetId: 'a', action: 'like' }), log.track({ assetId: 'b', action: 'like' })];
  await log.flush();
  assert.equal(server.requests.length, 1);
  const { backoffMs, failures, pending } = log.stats();
  assert.ok(backoffMs > 500 && backoffMs <= 1000, `backoff ${backoffMs}`); // Retry-After: 1
  assert.equal(failures, 1);
  assert.equal(pending, 2);
  assert.equal(errors[0]!.status, 503);
  assert.equal(errors[0]!.retry, true);
  assert.equal(errors[0]!.message, 'the database is unavailable');
  await log.flush();
  await log.flush();
  assert.equal(server.requests.length, 1, 'no probe before Retry-After');
  t.mock.timers.tick(backoffMs - 1);
  await log.flush();
  assert.equal(server.requests.length, 1, 'no probe 1 ms before Retry-After ends');
  t.mock.timers.tick(1);
  await log.flush();
  assert.equal(server.requests.length, 2);
  assert.deepEqual(server.requests[1]!.json.batch.map((e) => e.eventId), ids);
  assert.equal(log.stats().backoffMs, 0);
  await log.shutdown();
});

test('network errors, 5xx, 408 and 429: retried with backoff, one request per backoff interval', async (t) => {
  // Mock clock and timers: each backoff interval passes when the test says so.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  await withNoJitter(async () => {
    const server = mockFetch([new TypeError('fetch failed'), json(500, {}), json(408, {}), json(429, {}, { 'Retry-After': '0' }), accepted(1)]);
    const { log, errors, drops } = make({}, server);
    const id = log.track({ assetId: 'a', action: 'share' });
    for (let attempt = 1; attempt <= 5; attempt++) {
      await log.flush();
      await log.flush(); // within the backoff: nothing
      assert.equal(server.requests.length, attempt);
      t.mock.timers.tick(log.stats().backoffMs); // the 100 ms floor (0 once sent)
    }
    assert.deepEqual(errors.map((e) => [e.status, e.retry]), [[0, true], [500, true], [408, true], [429, true]]);
    assert.deepEqual(new Set(server.eventIds()), new Set([id]));
    assert.deepEqual(drops, []);
    assert.equal(log.stats().pending, 0);
    await log.shutdown();
  });
});

test('the backoff grows while the server stays down (full jitter up to the cap)', async (t) => {
  // A mock clock: what backoffMs reads does not depend on how long the machine took.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  const server = mockFetch([json(503, {})]);
  const { log } = make({}, server);
  log.track({ assetId: 'a', action: 'click' });
  const random = Math.random;
  Math.random = () => 0.999;
  try {
    await log.flush();
    const first = log.stats().backoffMs;
    assert.ok(first > 500 && first <= 1000, `${first}`); // 0.999 of [0, 1 s)
    // Pretend the first wait is over; the next is drawn from [0, 2 s).
    (log as unknown as { _setMeta(n: string, v: string): void })._setMeta('b', `0,1`);
    await log.flush();
    const second = log.stats().backoffMs;
    assert.ok(second > 1500 && second <= 2000, `${second}`);
    (log as unknown as { _setMeta(n: string, v: string): void })._setMeta('b', `0,20`);
    await log.flush();
    const capped = log.stats().backoffMs;
    assert.ok(capped > 59_000 && capped <= 60_000, `${capped}`); // the cap
  } finally {
    Math.random = random;
    await log.shutdown();
  }
});

test('other 4xx: the batch is dropped (onDrop rejected) and reported with the per-item errors', async () => {
  const itemErrors = [
    { index: 0, field: 'assetId', message: 'is required' },
    { index: 1, field: 'setting.device', message: 'must be web, android_app or ios_app' },
  ];
  const server = mockFetch([json(400, { status: 'error', message: 'all 2 events are invalid; see errors', errors: itemErrors }), accepted(1)]);
  const { log, errors, drops } = make({}, server);
  const ids = [log.track({ assetId: 'a', action: 'click' }), log.track({ assetId: 'b', action: 'click' })];
  await log.flush();
  assert.deepEqual(drops, [[2, 'rejected']]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.status, 400);
  assert.equal(errors[0]!.retry, false);
  assert.equal(errors[0]!.message, 'all 2 events are invalid; see errors');
  assert.deepEqual(errors[0]!.errors, itemErrors.map((e, i) => ({ ...e, eventId: ids[i] })));
  await log.flush();
  assert.equal(server.requests.length, 1, 'dropped, so never sent again');
  assert.equal(log.stats().pending, 0);
  await log.shutdown();
});

test('401 and 415 drop too', async () => {
  for (const status of [401, 415]) {
    const server = mockFetch([json(status, { status: 'error', message: 'no' })]);
    const { log, drops, errors } = make({}, server);
    log.track({ assetId: 'a', action: 'click' });
    await log.flush();
    assert.deepEqual(drops, [[1, 'rejected']]);
    assert.equal(errors[0]!.status, status);
    await log.shutdown();
  }
});

test('202 with per-item errors: reported through onError with eventIds; the whole batch leaves the queue', async () => {
  const itemErrors = [{ index: 1, field: 'progress', message: 'must be the fraction watched, 0.0 to 1.0, got 3' }];
  const server = mockFetch([accepted(2, itemErrors)]);
  const { log, errors, drops } = make({}, server);
  const ids = [
    log.track({ assetId: 'a', action: 'click' }),
    log.track({ assetId: 'b', action: 'watch', progress: 3 }),
    log.track({ assetId: 'c', action: 'click' }),
  ];
  await log.flush();
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.status, 202);
  assert.equal(errors[0]!.retry, false);
  assert.deepEqual(errors[0]!.errors, [{ ...itemErrors[0], eventId: ids[1] }]);
  assert.deepEqual(drops, []);
  assert.equal(log.stats().pending, 0);
  await log.flush();
  assert.equal(server.requests.length, 1);
  await log.shutdown();
});

test('413: the batch is halved until it fits; one event alone is dropped', async () => {
  const server = mockFetch([
    () => Promise.resolve(server.requests.at(-1)!.json.batch.length > 3 ? json(413, { status: 'error', message: 'too large' }) : accepted(0)),
  ]);
  const { log, drops } = make({ batchSize: 10 }, server);
  const ids = Array.from({ length: 10 }, (_, i) => log.track({ assetId: `a${i}`, action: 'click' }));
  await log.flush();
  assert.deepEqual(server.requests.map((r) => r.json.batch.length), [10, 5, 3, 3, 3, 1]);
  assert.deepEqual(drops, []);
  assert.deepEqual([...new Set(server.eventIds())], ids);
  await log.shutdown();

  const one = mockFetch([json(413, { status: 'error', message: 'too large' })]);
  const single = make({}, one);
  single.log.track({ assetId: 'a', action: 'click' });
  await single.log.flush();
  assert.deepEqual(single.drops, [[1, 'rejected']]);
  await single.log.shutdown();
});

test('optOut: clears the queue, nothing is sent or queued; optIn resumes', async () => {
  const { log, server } = make();
  log.track({ assetId: 'a', action: 'click' });
  log.track({ assetId: 'b', action: 'click' });
  log.optOut();
  assert.equal(log.optedOut, true);
  assert.equal(log.track({ assetId: 'c', action: 'click' }), '');
  assert.equal(log.like('c'), '');
  await log.flush();
  await idle(log);
  assert.equal(server.requests.length, 0);
  assert.equal(log.stats().pending, 0);
  log.optIn();
  assert.equal(log.optedOut, false);
  const id = log.track({ assetId: 'd', action: 'click' });
  await log.flush();
  assert.deepEqual(server.eventIds(), [id]);
  await log.shutdown();
});

test('helpers: one per action, camelCase, derived from ACTIONS; watch takes progress, review stars', async () => {
  const { log, server } = make();
  const names = ACTIONS.map((a) => a.replace(/_(.)/g, (_, c: string) => c.toUpperCase()));
  assert.deepEqual(names, [
    'viewRecommendation', 'impression', 'click', 'play', 'watch', 'watchComplete', 'like', 'dislike',
    'addToWatchlist', 'addToFavorites', 'removeFromWatchlist', 'removeFromFavorites', 'share', 'viewProduct',
    'clickProduct', 'addToCart', 'purchase', 'addToWishlist', 'removeFromWishlist', 'review', 'shareProduct',
  ]);
  const helpers = log as unknown as Record<string, (asset: string, a?: unknown, b?: unknown) => string>;
  for (const [i, name] of names.entries()) {
    const action = ACTIONS[i]!;
    if (action === 'watch') helpers[name]!(`asset-${action}`, 0.85, { comment: 'most of it' });
    else if (action === 'review') helpers[name]!(`asset-${action}`, 4, { subscriber: 'reviewer' });
    else helpers[name]!(`asset-${action}`, { contextId: 'home' });
  }
  const id = log.addToCart('sku-1', { comment: 'typed' });
  assert.match(id, /^[0-9a-f-]{36}$/);
  await log.flush();
  const batch = server.requests.flatMap((r) => r.json.batch);
  assert.deepEqual(batch.map((e) => e.action), [...ACTIONS, 'add_to_cart']);
  const byAction = Object.fromEntries(batch.map((e) => [e.action as string, e]));
  assert.equal(byAction.watch!.progress, 0.85);
  assert.equal(byAction.watch!.comment, 'most of it');
  assert.equal(byAction.review!.stars, 4);
  assert.equal(byAction.review!.subscriber, 'reviewer');
  assert.equal(byAction.click!.contextId, 'home');
  assert.equal(byAction.click!.assetId, 'asset-click');
  assert.ok(batch.every((e) => e.interaction === undefined && e.ratingEquivalent === undefined));
  await log.shutdown();
});

test('identify: sets the default subscriber; an event without one is refused locally', async () => {
  const { log, server, errors } = make({ subscriber: undefined });
  assert.equal(log.click('a'), '');
  assert.match(errors[0]!.message, /subscriber/);
  log.identify('user-9');
  log.click('b');
  await log.flush();
  assert.deepEqual(server.requests[0]!.json.batch.map((e) => e.subscriber), ['user-9']);
  await log.shutdown();
});

test('never throws into the host page: throwing callbacks, bad input, a throwing fetch', async () => {
  const log = new InteractionLogger({
    endpoint: 'http://ingest.test',
    apiKey: 'k',
    subscriber: 'u',
    storage: 'memory',
    flushInterval: 1e9,
    fetch: () => {
      throw new Error('fetch exploded');
    },
    onError: () => {
      throw new Error('callback exploded');
    },
    onDrop: () => {
      throw new Error('callback exploded');
    },
    maxQueue: 1,
  });
  assert.equal(log.track(undefined as never), '');
  assert.equal(log.track({ assetId: 'a', action: 'click', timestamp: 'not a date' }), '');
  assert.equal(log.track({ assetId: 'a', action: 'click', comment: 1n as never }), '', 'unserializable');
  log.click('a');
  log.click('b'); // over maxQueue: onDrop throws
  await log.flush();
  await log.flush();
  await log.shutdown();
  assert.equal(log.click('c'), '', 'shut down');
});

test('options given as undefined keep their defaults; batchSize is capped at 1000', async () => {
  const { log, server } = make({ batchSize: 5000, device: undefined });
  log.click('a');
  await log.flush();
  assert.equal(server.requests[0]!.json.batch[0]!.setting && (server.requests[0]!.json.batch[0]!.setting as { device: string }).device, 'web');
  assert.equal((log as unknown as { _limit: number })._limit, 1000);
  await log.shutdown();
});

// Compile-time checks of the helpers' types (never run).
export function typeChecks(log: InteractionLogger): void {
  log.watch('asset', 0.5);
  log.review('sku', 5, { comment: 'great' });
  log.viewRecommendation('asset', { contextId: 'home' });
  // @ts-expect-error watch takes the progress
  log.watch('asset');
  // @ts-expect-error review takes the stars
  log.review('sku');
  // @ts-expect-error no such action
  log.track({ assetId: 'a', action: 'wave' });
  // @ts-expect-error no such helper
  // eslint-disable-next-line @typescript-eslint/no-unsafe-call -- the point: it does not exist
  log.wave('a');
}
