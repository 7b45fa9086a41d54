import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_UNLOAD_BODY_BYTES, type QueuedEvent, requestBody, rfc3339, split, utf8Bytes } from '../src/batch.js';
import { uuidv7 } from '../src/uuid.js';

function events(n: number, comment: (i: number) => string): QueuedEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const id = uuidv7();
    const json = JSON.stringify({ eventId: id, timestamp: rfc3339(), subscriber: 'u', assetId: `a${i}`, action: 'click', comment: comment(i), setting: { device: 'web' } });
    return { id, json, bytes: utf8Bytes(json) };
  });
}

test('split: bodies of at most 64 KiB (UTF-8, with the key and sentAt), every event once, in order, groups full', () => {
  const apiKey = 'clé-publique-ключ';
  const sentAt = rfc3339();
  // Multi-byte comments (2-, 3- and 4-byte characters) of varying length.
  const queued = events(900, (i) => 'é€😀x'.repeat(i % 250));
  const groups = split(queued, MAX_UNLOAD_BODY_BYTES, utf8Bytes(requestBody([], sentAt, apiKey)));
  assert.ok(groups.length > 3, `${groups.length} groups`);
  const sizes = groups.map((g) => utf8Bytes(requestBody(g, sentAt, apiKey)));
  for (const size of sizes) assert.ok(size <= MAX_UNLOAD_BODY_BYTES, `${size} > 64 KiB`);
  assert.deepEqual(groups.flat().map((e) => e.id), queued.map((e) => e.id));
  // Greedy: the next event would not have fit.
  groups.slice(0, -1).forEach((g, i) => {
    const next = groups[i + 1]![0]!;
    assert.ok(utf8Bytes(requestBody([...g, next], sentAt, apiKey)) > MAX_UNLOAD_BODY_BYTES);
  });
  // And the bodies are the JSON the server expects.
  const body = JSON.parse(requestBody(groups[0]!, sentAt, apiKey));
  assert.deepEqual(Object.keys(body), ['apiKey', 'sentAt', 'batch']);
  assert.equal(body.apiKey, apiKey);
  assert.equal(body.batch.length, groups[0]!.length);
});

test('split: an event too large alone gets its own group; nothing is lost', () => {
  const queued = events(3, (i) => (i === 1 ? 'x'.repeat(70_000) : 'small'));
  const groups = split(queued, MAX_UNLOAD_BODY_BYTES, 60);
  assert.deepEqual(groups.map((g) => g.length), [1, 1, 1]);
  assert.deepEqual(split([], MAX_UNLOAD_BODY_BYTES, 60), []);
});

test('requestBody: the normal form has no apiKey; sentAt is RFC 3339', () => {
  const sentAt = rfc3339();
  assert.match(sentAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  const queued = events(2, () => 'c');
  const body = JSON.parse(requestBody(queued, sentAt)) as { sentAt: string; batch: { eventId: string }[] };
  assert.deepEqual(Object.keys(body), ['sentAt', 'batch']);
  assert.equal(body.sentAt, sentAt);
  assert.deepEqual(body.batch.map((e) => e.eventId), queued.map((e) => e.id));
});
