import { gunzipSync } from 'node:zlib';
import { InteractionLogger, type DropReason, type LoggerError, type LoggerOptions } from '../src/index.js';

// The real timers and clock, taken before any test enables mock timers (mock.timers replaces
// the globals): `until` and `turns` keep working while a test drives the logger's timers.
const realSetTimeout = globalThis.setTimeout;
const realSetImmediate = globalThis.setImmediate;
const monotonic = () => performance.now();

export interface Captured {
  url: string;
  headers: Record<string, string>;
  /** The body as sent (gunzipped when gzip). */
  text: string;
  /** Its parsed JSON. */
  json: { apiKey?: string; sentAt: string; batch: Record<string, unknown>[] };
  keepalive: boolean;
  /** Bytes as sent. */
  size: number;
}

export type Answer = Response | Error | (() => Response | Error | Promise<Response | Error>);

/**
 * A fetch that records every request and answers from `answers` (one per request; the last
 * is repeated), 202 with no errors by default.
 */
export function mockFetch(answers: Answer[] = []) {
  const requests: Captured[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      const headers = Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v]));
      const raw = init?.body;
      let bytes: Buffer;
      if (typeof raw === 'string') bytes = Buffer.from(raw, 'utf8');
      else if (raw instanceof Blob) bytes = Buffer.from(await raw.arrayBuffer());
      else throw new Error(`unexpected body ${typeof raw}`);
      const text = (headers['content-encoding'] === 'gzip' ? gunzipSync(bytes) : bytes).toString('utf8');
      const request: Captured = {
        url: input instanceof Request ? input.url : input.toString(),
        headers,
        text,
        json: JSON.parse(text),
        keepalive: init?.keepalive === true,
        size: bytes.length,
      };
      requests.push(request);
      const spec = answers.length ? answers[Math.min(requests.length - 1, answers.length - 1)]! : undefined;
      const answer = typeof spec === 'function' ? await spec() : spec ?? accepted(request.json.batch.length);
      if (answer instanceof Error) throw answer;
      return answer;
    } finally {
      inFlight--;
    }
  };
  return {
    fetch: fetch satisfies typeof globalThis.fetch,
    requests,
    /** Requests not answered yet. */
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    /** Every eventId sent, in order (with repeats). */
    eventIds: () => requests.flatMap((r) => r.json.batch.map((e) => e.eventId as string)),
  };
}

export const accepted = (count: number, errors: unknown[] = []): Response =>
  json(202, { status: 'success', message: 'Batch received and saved for processing', count, skipped: errors.length, duplicates: 0, errors });

export const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });

/**
 * Lets the event loop run `n` turns (no wall-clock time involved): every promise chain that
 * is not waiting for a timer, I/O or a test's gate runs to its end. For "nothing else
 * happens" checks where the trigger is not a timer; timers are driven by mock.timers.
 */
export async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => realSetImmediate(resolve));
}

/** The logger's private state the tests wait on. */
interface Internals {
  /** The chain of queue writes. */
  _w: Promise<void>;
  /** The send cycle running, if any. */
  _run: Promise<void> | undefined;
  /** This page's unconfirmed events; `k` while in a keepalive (page hide) request. */
  _mem: Map<string, { k?: boolean }>;
}
const internals = (log: object) => log as unknown as Internals;

/** Resolves when every event tracked so far has been written to the queue (or dropped). */
export async function stored(...logs: object[]): Promise<void> {
  for (const log of logs) {
    let w: Promise<void>;
    do await (w = internals(log)._w);
    while (w !== internals(log)._w);
  }
}

/** Resolves when the logger is idle: its queue writes done and no send cycle running. */
export async function idle(log: object): Promise<void> {
  for (;;) {
    await stored(log);
    const { _w: w, _run: run } = internals(log);
    if (run) {
      await run;
      continue;
    }
    await turns(); // whatever the last step started (nothing, normally) gets to show
    if (!internals(log)._run && internals(log)._w === w) return;
  }
}

/** Whether no page-hide (keepalive) request of the logger is still waiting for its outcome. */
export const unloadSettled = (log: object): boolean => [...internals(log)._mem.values()].every((r) => !r.k);

/** A promise and its resolver. */
export function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Waits until `condition()` holds (polling), failing after `ms` of real time: the bound only
 * matters on failure. Uses the real timers and clock, so it works under mock.timers.
 */
export async function until(condition: () => boolean, ms = 10_000): Promise<void> {
  const end = monotonic() + ms;
  while (!condition()) {
    if (monotonic() > end) throw new Error(`condition not met within ${ms} ms: ${String(condition)}`);
    await new Promise<void>((resolve) => realSetTimeout(resolve, 5));
  }
}

/** A logger on the memory queue and `server`, sending only when told (flush), with its onError and onDrop reports collected. */
export function make(options: Partial<LoggerOptions> = {}, server = mockFetch()) {
  const errors: LoggerError[] = [];
  const drops: [number, DropReason][] = [];
  const log = new InteractionLogger({
    endpoint: 'http://ingest.test/',
    apiKey: 'public-write-key',
    subscriber: 'user-123',
    storage: 'memory',
    batchSize: 1000,
    flushInterval: 1e9,
    fetch: server.fetch,
    onError: (e) => errors.push(e),
    onDrop: (n, reason) => drops.push([n, reason]),
    ...options,
  });
  return { log, server, errors, drops };
}
