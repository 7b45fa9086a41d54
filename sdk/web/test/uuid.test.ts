import assert from 'node:assert/strict';
import { test } from 'node:test';
import { uuidv7 } from '../src/uuid.js';

const FORMAT = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const millis = (id: string) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);

test('uuidv7: RFC 9562 layout (version 7, variant 10) with the current Unix milliseconds', () => {
  const before = Date.now();
  const id = uuidv7();
  const after = Date.now();
  assert.match(id, FORMAT);
  assert.ok(millis(id) >= before && millis(id) <= after, `${millis(id)} not in [${before}, ${after}]`);
});

test('uuidv7: strictly increasing and unique over many ids in the same milliseconds', () => {
  const ids = Array.from({ length: 20_000 }, () => uuidv7());
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} !< ${ids[i]}`);
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.match(id, FORMAT);
});

test('uuidv7: still increasing when the clock stands still or steps back; counter overflow moves the timestamp on', () => {
  const t = Date.now() + 10_000_000; // ahead of earlier tests' ids
  const ids = [uuidv7(t)];
  for (let i = 0; i < 5000; i++) ids.push(uuidv7(t)); // more than the 12-bit counter holds
  ids.push(uuidv7(t - 60_000)); // the clock stepped back a minute
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!, `at ${i}: ${ids[i - 1]} !< ${ids[i]}`);
  assert.equal(millis(ids[0]!), t);
  assert.ok(millis(ids.at(-1)!) > t, 'the overflow advanced the timestamp');
  assert.ok(millis(ids.at(-1)!) < t + 10, 'by a few ms only');
  for (const id of ids) assert.match(id, FORMAT);
});
