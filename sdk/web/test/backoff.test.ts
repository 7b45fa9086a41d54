import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BACKOFF_BASE_MS, BACKOFF_CAP_MS, BACKOFF_FLOOR_MS, RETRY_AFTER_CAP_MS, backoff, parseRetryAfter } from '../src/backoff.js';

test('backoff: full jitter, uniform in [0, min(cap, base·2^n)) with a floor', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    assert.equal(backoff(attempt, undefined, () => 0), BACKOFF_FLOOR_MS);
    assert.equal(backoff(attempt, undefined, () => 0.5), Math.max(BACKOFF_FLOOR_MS, ceiling / 2));
    assert.equal(backoff(attempt, undefined, () => 0.999999), Math.floor(0.999999 * ceiling));
  }
  assert.equal(backoff(1000, undefined, () => 0.999999), Math.floor(0.999999 * BACKOFF_CAP_MS), 'capped, no overflow');
});

test('backoff: the samples spread over the whole interval (full jitter, not equal jitter)', () => {
  const samples = Array.from({ length: 4000 }, () => backoff(4)); // ceiling 16 s
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(Math.min(...samples) < 1600, 'some retries come early');
  assert.ok(Math.max(...samples) > 14_400, 'some come late');
  assert.ok(Math.abs(mean - 8000) < 600, `mean ${mean} ≈ 8000`);
  assert.ok(samples.every((s) => s >= BACKOFF_FLOOR_MS && s < 16_000));
});

test('backoff: Retry-After is a lower bound', () => {
  assert.equal(backoff(0, 5000, () => 0.9), 5000);
  assert.equal(backoff(10, 5000, () => 0.9), Math.floor(0.9 * BACKOFF_CAP_MS));
  assert.equal(backoff(0, 120_000, () => 0.9), 120_000, 'honored beyond the backoff cap');
});

test('parseRetryAfter: delta-seconds, HTTP-date, garbage, cap', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  assert.equal(parseRetryAfter('5', now), 5000);
  assert.equal(parseRetryAfter(' 0 ', now), 0);
  assert.equal(parseRetryAfter('Mon, 30 Nov 2026 12:00:30 GMT', now), 30_000);
  assert.equal(parseRetryAfter('Mon, 30 Nov 2026 11:00:00 GMT', now), 0, 'a date in the past: at once');
  assert.equal(parseRetryAfter('86400', now), RETRY_AFTER_CAP_MS);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter('-3', now), undefined);
  assert.equal(parseRetryAfter('', now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});
