// Page hide in a simulated page: `window`, `document` and `addEventListener` exist here (this
// file runs in a process of its own), so the logger installs its pagehide/visibilitychange
// listeners.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InteractionLogger, MAX_UNLOAD_BODY_BYTES } from '../src/index.js';
import { type Captured, accepted, deferred, mockFetch, turns, unloadSettled, until } from './helpers.js';

const page = new EventTarget();
const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' satisfies DocumentVisibilityState });
Object.assign(globalThis, {
  window: page,
  document: doc,
  addEventListener: page.addEventListener.bind(page),
  removeEventListener: page.removeEventListener.bind(page),
});
const hide = () => {
  doc.visibilityState = 'hidden';
  doc.dispatchEvent(new Event('visibilitychange'));
};
const show = () => {
  doc.visibilityState = 'visible';
  doc.dispatchEvent(new Event('visibilitychange'));
};

const isUnload = (r: Captured) => r.keepalive;

test('200 events, then the page goes away at once: every event leaves in keepalive text/plain bodies of ≤ 64 KiB', async () => {
  const normal = deferred<Response>();
  const server = mockFetch([
    // The normal request that is in flight when the page goes: never answered.
    () => normal.promise,
    () => accepted(0),
  ]);
  const log = new InteractionLogger({
    endpoint: 'https://events.example.com',
    apiKey: 'public-write-key',
    subscriber: 'user-123',
    storage: 'memory',
    batchSize: 20,
    flushInterval: 1e9,
    fetch: server.fetch,
  });
  // Comments make the bodies big enough to need splitting.
  const ids = Array.from({ length: 200 }, (_, i) => log.track({ assetId: `asset-${i}`, action: 'impression', comment: 'é'.repeat(300) }));
  await until(() => server.requests.length === 1); // the first batch is in flight
  await turns(); // the send cycle is parked on that request: let everything else run
  assert.equal(server.requests.filter((r) => !isUnload(r)).length, 1);
  const inFlight = server.requests[0]!.json.batch.map((e) => e.eventId);
  assert.equal(inFlight.length, 20);

  hide(); // visibilitychange → hidden: everything but the batch in flight
  page.dispatchEvent(new Event('pagehide')); // then the batch in flight too (navigation cancels it)
  await until(() => unloadSettled(log)); // every unload request answered and its answer handled

  const unload = server.requests.filter(isUnload);
  assert.ok(unload.length >= 2, `${unload.length} bodies`);
  const unloadIds = unload.flatMap((r) => r.json.batch.map((e) => e.eventId));
  assert.equal(unloadIds.length, 200, 'each event once over the unload requests');
  assert.deepEqual(new Set(unloadIds), new Set(ids));
  for (const request of unload) {
    assert.ok(request.size <= MAX_UNLOAD_BODY_BYTES, `${request.size} bytes`);
    // A simple request: no preflight.
    assert.deepEqual(request.headers, { 'content-type': 'text/plain;charset=UTF-8' });
    assert.equal(request.json.apiKey, 'public-write-key');
    assert.ok(Date.parse(request.json.sentAt) > 0);
    assert.deepEqual(Object.keys(request.json), ['apiKey', 'sentAt', 'batch']);
  }
  // The page lived on (a hidden tab): the answers confirmed everything, nothing left to send.
  assert.equal(log.stats().pending, 0);
  normal.resolve(accepted(20));
  await log.flush();
  assert.equal(server.requests.length, 1 + unload.length, 'nothing sent twice through the normal path');
  await log.shutdown();
});

test('an unconfirmed unload send keeps the events for the normal path', async () => {
  const server = mockFetch([
    () => (server.requests.at(-1)!.keepalive ? new TypeError('Failed to fetch') : accepted(0)),
  ]);
  const log = new InteractionLogger({ endpoint: 'https://e.test', apiKey: 'k', subscriber: 'u', storage: 'memory', flushInterval: 1e9, fetch: server.fetch });
  show();
  const ids = [log.play('a'), log.like('a')];
  hide();
  await until(() => unloadSettled(log)); // the unload request failed and that was handled
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]!.keepalive, true);
  assert.equal(log.stats().pending, 2);
  show();
  await log.flush();
  assert.deepEqual(server.requests.slice(1).flatMap((r) => r.json.batch.map((e) => e.eventId)), ids);
  assert.equal(server.requests[1]!.keepalive, false);
  assert.equal(log.stats().pending, 0);
  await log.shutdown();
});

test('a refused unload send (e.g. 415 from a server without the text/plain form) drops nothing', async () => {
  const server = mockFetch([
    () =>
      server.requests.at(-1)!.keepalive
        ? new Response('{"status":"error","message":"no"}', { status: 415 })
        : accepted(0),
  ]);
  const drops: number[] = [];
  const log = new InteractionLogger({
    endpoint: 'https://e.test',
    apiKey: 'k',
    subscriber: 'u',
    storage: 'memory',
    flushInterval: 1e9,
    fetch: server.fetch,
    onDrop: (n) => drops.push(n),
  });
  show();
  const id = log.share('a');
  hide();
  await until(() => unloadSettled(log)); // the 415 came back and was handled
  show();
  await log.flush();
  assert.deepEqual(drops, []);
  assert.deepEqual(server.eventIds(), [id, id]);
  await log.shutdown();
});

test('no unload send while backing off, after optOut, or after shutdown', async () => {
  const server = mockFetch([new Response('{}', { status: 503, headers: { 'Retry-After': '30' } })]);
  const log = new InteractionLogger({ endpoint: 'https://e.test', apiKey: 'k', subscriber: 'u', storage: 'memory', flushInterval: 1e9, fetch: server.fetch });
  show();
  log.click('a');
  await log.flush();
  assert.equal(server.requests.length, 1);
  hide();
  page.dispatchEvent(new Event('pagehide'));
  await turns(); // an unload send starts synchronously in the handlers: it would show by now
  assert.equal(server.requests.length, 1, 'the server asked for 30 s');
  await log.shutdown();

  const other = mockFetch();
  const off = new InteractionLogger({ endpoint: 'https://e.test', apiKey: 'k', subscriber: 'u', storage: 'memory', storageName: 'x', flushInterval: 1e9, fetch: other.fetch });
  show();
  off.click('a');
  off.optOut();
  hide();
  page.dispatchEvent(new Event('pagehide'));
  await off.shutdown();
  page.dispatchEvent(new Event('pagehide'));
  await turns(); // as above
  assert.equal(other.requests.length, 0);
});
