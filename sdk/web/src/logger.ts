import { ACTIONS, type Action, type ActionHelpers, type HelperExtra, type Interaction, NUMERIC_FIELD, camelCase } from './actions.js';
import { backoff, parseRetryAfter } from './backoff.js';
import { MAX_UNLOAD_BODY_BYTES, type QueuedEvent, requestBody, rfc3339, split, utf8Bytes } from './batch.js';
import { type Backend, type StorageKind, expired, openBackend, overflow } from './storage.js';
import { uuidv7 } from './uuid.js';

/** `setting.device`. */
export type Device = 'web' | 'android_app' | 'ios_app';

/** Why events left the queue unsent (see `onDrop`). */
export type DropReason =
  /** The queue was over `maxQueue` or `maxQueueBytes`: the oldest events went. */
  | 'overflow'
  /** The server refused the request with a 4xx that a retry cannot fix (400, 401, 413 for one event, 415…). */
  | 'rejected'
  /** The browser refused to store them (QuotaExceededError and the like). */
  | 'storage'
  /** Queued longer than `maxAge`: sending them now could store them twice (the server forgets eventIds after 7 days). */
  | 'expired';

/** What the server said about one item of an accepted batch (the 202's `errors`). */
export interface ItemError {
  /** Position in the request. */
  index: number;
  /** JSON path of the field (`$` for the item itself). */
  field: string;
  message: string;
  /** The event's eventId. */
  eventId?: string;
}

/** What `onError` receives: an Error, with the HTTP status when there was an answer. */
export interface LoggerError extends Error {
  /** The HTTP status; 0 for a network error or a timeout; absent for a local failure. */
  status?: number;
  /** Per-item problems (202 with invalid items, or 400 when every item was invalid). */
  errors?: ItemError[];
  /** True when the events were kept and will be sent again. */
  retry?: boolean;
}

/** One event, as `track` takes it. */
export interface TrackEvent extends HelperExtra {
  assetId: string;
  /** The spec's interaction type; or use `action`. */
  interaction?: Interaction;
  /** -1..1, with `interaction` only (omitted: the server's profile default). */
  ratingEquivalent?: number;
  /** An app-level action the server's rating profile maps; instead of `interaction`. */
  action?: Action;
  /** 0..1, with `action: 'watch'`. */
  progress?: number;
  /** 1..5, with `action: 'review'`. */
  stars?: number;
}

export interface LoggerOptions {
  /** ingest-api's base URL, e.g. `https://events.example.com`. */
  endpoint: string;
  /** The tenant's (public, write-only) API key. */
  apiKey: string;
  /** Default `'web'`. */
  device?: Device;
  /** Subscriber of events that name none; `identify()` changes it. */
  subscriber?: string;
  /** Events per request, and how many tracked events start a send at once (default 20, at most 1000). */
  batchSize?: number;
  /** Milliseconds between sends of what is queued (default 2000). */
  flushInterval?: number;
  /** Most events kept in the queue (default 1000); beyond it the oldest go. */
  maxQueue?: number;
  /** Most bytes (the events' JSON, UTF-8) kept in the queue (default 1 MiB); beyond it the oldest go. */
  maxQueueBytes?: number;
  /** Milliseconds an event may wait in the queue (default and at most 7 days: the server's dedup window, DEDUP_WINDOW, is at least 7 days). */
  maxAge?: number;
  /** Called with how many events were dropped unsent, and why. */
  onDrop?: (count: number, reason: DropReason) => void;
  /** Called on every failure: refused events, per-item errors of a 202, network errors, storage errors. */
  onError?: (error: LoggerError) => void;
  /** Queue storage (default `'auto'`: IndexedDB, else localStorage, else memory). */
  storage?: 'auto' | StorageKind;
  /** Name of the IndexedDB database, prefix of the localStorage keys and name of the Web Lock (default `'interaction-logger'`). Loggers with the same name on one origin share one queue. */
  storageName?: string;
  /** Gzip request bodies with CompressionStream where available (default true). */
  gzip?: boolean;
  /** Milliseconds before a request is abandoned and retried (default 30000). */
  timeout?: number;
  /** A fetch implementation (tests). */
  fetch?: typeof fetch;
}

/** What `stats()` returns: counters of this logger since it was created. */
export interface LoggerStats {
  /** Where the queue lives ('' until the storage is open). */
  storage: StorageKind | '';
  /** Events this page tracked or is sending that no 2xx has confirmed yet. */
  pending: number;
  /** Events a 2xx confirmed (including ones the server refused as invalid or skipped as duplicates). */
  sent: number;
  /** Events reported through `onDrop`. */
  dropped: number;
  /** Requests made (including those on page hide). */
  requests: number;
  /** Requests that failed and will be retried. */
  failures: number;
  /** Milliseconds until the next attempt is allowed (0: none pending). */
  backoffMs: number;
}

/** Largest body of a normal request, in bytes (ingest-api's BODY_LIMIT_BYTES default is 1 MiB). */
export const MAX_BODY_BYTES = 512 * 1024;
const WEEK = 7 * 86_400_000;
/** How long a lease (the fallback for the Web Locks API) is held at most, in ms. */
const LEASE_MS = 60_000;
/** The event fields taken from `track`'s argument as they are. */
const FIELDS = [
  'assetId',
  'interaction',
  'ratingEquivalent',
  'action',
  'progress',
  'stars',
  'comment',
  'contextId',
] as const;

interface Rec extends QueuedEvent {
  key: string;
  /** Stored in the queue. */
  s?: boolean;
  /** In the normal request in flight. */
  n?: boolean;
  /** In a keepalive request sent on page hide. */
  k?: boolean;
}

/** Calls a host-page callback; whatever it throws stays here. */
const safe = (fn: () => void): void => {
  try {
    fn();
  } catch {
    /* never into the host page */
  }
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const nav = (): Navigator | undefined => (typeof navigator === 'object' ? navigator : undefined);

// The class and the helpers' interface merge: the helpers are installed on the prototype below.
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging
export interface InteractionLogger extends ActionHelpers {}

/**
 * Queues interaction events persistently and sends them to ingest-api in batches. See
 * sdk/web/README.md. No method throws; failures go to `onError` and `onDrop`.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class InteractionLogger {
  private _o: Required<Omit<LoggerOptions, 'subscriber' | 'onDrop' | 'onError' | 'fetch'>> & LoggerOptions;
  private _url: string;
  private _sub: string | undefined;
  private _q: Promise<Backend>;
  private _kind: StorageKind | '' = '';
  /** This page's unconfirmed events (own ones, and the batch in flight), by eventId: what page hide sends. */
  private _mem = new Map<string, Rec>();
  /** Tracked, not yet written. */
  private _p: Rec[] = [];
  /** The chain of queue writes. */
  private _w: Promise<void> = Promise.resolve();
  private _run: Promise<void> | undefined;
  private _t: ReturnType<typeof setTimeout> | undefined;
  private _c = 0;
  private _limit: number;
  private _closed = false;
  /** Meta values when localStorage is unusable. */
  private _m = new Map<string, string | null>();
  private _tab = uuidv7();
  private _h: (() => void)[] = [];
  private _st = { sent: 0, dropped: 0, requests: 0, failures: 0 };
  private _fetch: typeof fetch;

  constructor(options: LoggerOptions) {
    const o = (this._o = {
      device: 'web',
      batchSize: 20,
      flushInterval: 2000,
      maxQueue: 1000,
      maxQueueBytes: 1 << 20,
      maxAge: WEEK,
      storage: 'auto',
      storageName: 'interaction-logger',
      gzip: true,
      timeout: 30_000,
      // Options given as undefined or null keep their defaults.
      ...(Object.fromEntries(Object.entries(options ?? {}).filter(([, v]) => v != null)) as LoggerOptions),
    });
    o.batchSize = this._limit = Math.max(1, Math.min(1000, o.batchSize));
    o.maxAge = Math.min(o.maxAge, WEEK);
    this._sub = o.subscriber;
    this._url = String(o.endpoint).replace(/\/+$/, '') + '/api/v1/logs';
    this._fetch = o.fetch ?? ((input, init) => fetch(input, init));
    this._q = openBackend(o.storage, o.storageName).then((b) => ((this._kind = b.kind), b));
    if (typeof addEventListener === 'function' && typeof document === 'object') {
      const handlers: [EventTarget, string, () => void][] = [
        [window, 'pagehide', () => this._hide(true)],
        [document, 'visibilitychange', () => document.visibilityState === 'hidden' && this._hide(false)],
      ];
      for (const [target, type, fn] of handlers) {
        target.addEventListener(type, fn);
        this._h.push(() => target.removeEventListener(type, fn));
      }
    }
    this._arm();
  }

  /** Queues one event; returns its eventId, or '' when it was not queued (opted out, shut down, invalid). */
  track(event: TrackEvent): string {
    try {
      if (this._closed || this.optedOut) return '';
      const subscriber = event.subscriber ?? this._sub;
      if (!subscriber || !event.assetId) throw new Error('track: assetId and a subscriber are required');
      const id = uuidv7();
      const data: Record<string, unknown> = { eventId: id, timestamp: rfc3339(event.timestamp ?? Date.now()), subscriber };
      for (const field of FIELDS) data[field] = event[field];
      data.setting = { device: this._o.device };
      const json = JSON.stringify(data);
      const bytes = utf8Bytes(json);
      const rec: Rec = { id, json, bytes, key: `${id}|${bytes}` };
      this._mem.set(id, rec);
      if (this._p.push(rec) === 1) this._w = this._w.then(() => this._write());
      if (++this._c >= this._o.batchSize) {
        this._c = 0;
        void this._cycle();
      }
      return id;
    } catch (e) {
      this._error(e);
      return '';
    }
  }

  /** Sets the subscriber of later events that name none. */
  identify(subscriber: string): void {
    this._sub = subscriber;
  }

  /** Sends what is queued now (waiting for another tab's send to finish); resolves when done or when sending fails (never rejects). */
  async flush(): Promise<void> {
    try {
      while (this._run) await this._run;
      await this._cycle(true);
    } catch (e) {
      this._error(e);
    }
  }

  /** Stops tracking and sending, for this origin's pages under this storageName, and clears the queue; persisted. */
  optOut(): void {
    this._setMeta('o', '1');
    this._p = [];
    this._mem.clear();
    this._w = this._w.then(() => this._clear());
  }

  /** Resumes tracking after `optOut()`. */
  optIn(): void {
    this._setMeta('o', null);
  }

  /** Whether tracking is off (`optOut()`), in any page of this origin. */
  get optedOut(): boolean {
    return this._getMeta('o') === '1';
  }

  /** Sends what is queued, then stops: timers and listeners removed, later `track` calls ignored. */
  async shutdown(): Promise<void> {
    this._h.forEach(safe);
    this._h = [];
    await this.flush();
    this._closed = true;
    clearTimeout(this._t);
  }

  stats(): LoggerStats {
    return { storage: this._kind, pending: this._mem.size, ...this._st, backoffMs: Math.max(0, this._backoff()[0] - Date.now()) };
  }

  // --- the queue ---

  private async _write(): Promise<void> {
    const batch = this._p;
    this._p = [];
    const over = batch.length - this._o.maxQueue;
    if (over > 0) {
      batch.splice(0, over).forEach((r) => this._mem.delete(r.id));
      this._drop(over, 'overflow');
    }
    let fresh = batch;
    try {
      const q = await this._q;
      // Room first, then the batch: the stored queue never holds more than its bounds, not
      // even between two transactions.
      const kept = new Set(await this._trim(q, [...(await q.keys()), ...batch.map((r) => r.key)].sort()));
      fresh = batch.filter((r) => kept.has(r.key));
      await q.put(fresh.map((r) => [r.key, r.json] as const));
      fresh.forEach((r) => (r.s = true));
    } catch (e) {
      fresh.forEach((r) => this._mem.delete(r.id));
      this._drop(fresh.length, 'storage');
      this._error(e);
    }
  }

  /** Drops the queue's expired events, then its oldest beyond the bounds; returns the keys left. */
  private async _trim(q: Backend, keys: string[]): Promise<string[]> {
    const old = expired(keys, Date.now() - this._o.maxAge);
    const over = overflow(keys.slice(old), this._o.maxQueue, this._o.maxQueueBytes);
    if (old + over) {
      const gone = keys.splice(0, old + over);
      await q.del(gone);
      gone.forEach((k) => this._mem.delete(k.slice(0, 36)));
      if (old) this._drop(old, 'expired');
      if (over) this._drop(over, 'overflow');
    }
    return keys;
  }

  private async _clear(): Promise<void> {
    try {
      const q = await this._q;
      const keys = await q.keys();
      if (keys.length) await q.del(keys);
    } catch (e) {
      this._error(e);
    }
  }

  /** Removes events the server answered for. */
  private async _forget(group: Rec[]): Promise<void> {
    group.forEach((r) => this._mem.delete(r.id));
    await (await this._q).del(group.map((r) => r.key));
  }

  // --- sending ---

  /** Runs one send cycle (sends batches until the queue is empty or a request fails); one at a time. */
  private _cycle(wait = false): Promise<void> {
    return (this._run ??= (async () => {
      try {
        await this._w;
        while (!this._closed && (await this._once(wait)));
      } catch (e) {
        this._error(e);
      }
      this._run = undefined;
      this._arm();
    })());
  }

  /** Sends the oldest batch, holding the queue's lock; true if more may follow at once. */
  private async _once(wait: boolean): Promise<boolean> {
    const q = await this._q;
    if (this.optedOut) {
      this._mem.clear();
      await this._clear();
      return false;
    }
    if (this._backoff()[0] > Date.now() || nav()?.onLine === false) return false;
    const keys = await this._trim(q, await q.keys());
    // Own events stored earlier and gone now were confirmed (or dropped) by another page.
    const stored = new Set(keys.map((k) => k.slice(0, 36)));
    for (const [id, r] of this._mem) if (r.s && !r.n && !stored.has(id)) this._mem.delete(id);
    if (!keys.length) return false;
    let more = false;
    await this._lock(wait, async () => {
      const keys = (await q.keys()).filter((k) => !this._mem.get(k.slice(0, 36))?.k).slice(0, this._limit);
      const values = await q.get(keys);
      const recs: Rec[] = [];
      keys.forEach((key, i) => {
        const json = values[i];
        const id = key.slice(0, 36);
        if (json != null) recs.push(this._mem.get(id) ?? { id, json, bytes: +key.slice(37), key, s: true });
      });
      const group = split(recs, MAX_BODY_BYTES, 64)[0];
      if (!group) return;
      for (const r of group) this._mem.set(r.id, Object.assign(r, { n: true }));
      try {
        more = await this._post(group);
      } finally {
        group.forEach((r) => (r.n = false));
      }
    });
    return more;
  }

  private async _post(group: Rec[]): Promise<boolean> {
    const json = requestBody(group, rfc3339());
    const headers: Record<string, string> = { 'Content-Type': 'application/json', 'X-API-Key': this._o.apiKey };
    let body: BodyInit = json;
    if (this._o.gzip && json.length > 1024 && typeof CompressionStream === 'function') {
      body = await new Response(new Blob([json]).stream().pipeThrough(new CompressionStream('gzip'))).blob();
      headers['Content-Encoding'] = 'gzip';
    }
    this._st.requests++;
    let response: Response | undefined;
    let failure: unknown;
    try {
      response = await this._fetch(this._url, {
        method: 'POST',
        headers,
        body,
        credentials: 'omit',
        signal: typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(this._o.timeout) : null,
      });
    } catch (e) {
      failure = e;
    }
    return this._answer(group, response, failure);
  }

  /** Acts on a request's outcome; true if the next batch may go at once. */
  private async _answer(group: Rec[], response: Response | undefined, failure?: unknown, unload = false): Promise<boolean> {
    const status = response?.status ?? 0;
    let info: { message?: string; errors?: ItemError[] } = {};
    try {
      info = ((await response?.json()) as typeof info | undefined) ?? {};
    } catch {
      /* not JSON */
    }
    const errors = (Array.isArray(info.errors) ? info.errors : []).map((e) => ({ ...e, eventId: group[e.index]?.id }));
    const report = (retry: boolean) =>
      this._error(failure ?? info.message ?? `HTTP ${status}`, { status, retry, ...(errors.length ? { errors } : {}) });
    if (status > 199 && status < 300) {
      await this._forget(group);
      this._st.sent += group.length;
      if (this._backoff()[1]) this._setMeta('b', null);
      if (errors.length) report(false);
      return true;
    }
    // On page hide only a 2xx counts: the normal path retries or drops the rest by its own rules.
    if (unload) return false;
    if (status === 413 && group.length > 1) {
      this._limit = Math.ceil(group.length / 2);
      return true;
    }
    if (!status || status === 408 || status === 429 || status > 499) {
      const attempt = this._backoff()[1];
      const delay = backoff(attempt, parseRetryAfter(response?.headers.get('Retry-After')));
      this._setMeta('b', `${Date.now() + delay},${attempt + 1}`);
      this._st.failures++;
      report(true);
      return false;
    }
    await this._forget(group);
    this._drop(group.length, 'rejected');
    report(false);
    return true;
  }

  /** On page hide: sends this page's unconfirmed events as simple requests that outlive the page. */
  private _hide(all: boolean): void {
    try {
      if (this._closed || this.optedOut || this._backoff()[0] > Date.now()) return;
      const recs = [...this._mem.values()].filter((r) => !r.k && (all || !r.n)).sort((a, b) => (a.id < b.id ? -1 : 1));
      const key = this._o.apiKey;
      const sentAt = rfc3339();
      const keepalive = typeof Request === 'function' && 'keepalive' in Request.prototype;
      for (const group of split(recs, MAX_UNLOAD_BODY_BYTES, utf8Bytes(requestBody([], sentAt, key)))) {
        const body = requestBody(group, sentAt, key);
        this._st.requests++;
        if (keepalive) {
          group.forEach((r) => (r.k = true));
          this._fetch(this._url, {
            method: 'POST',
            body,
            keepalive: true,
            credentials: 'omit',
            headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
          })
            .then(
              (response) => this._answer(group, response, undefined, true),
              () => false,
            )
            .catch((e: unknown) => this._error(e))
            .finally(() => group.forEach((r) => (r.k = false)));
        } else nav()?.sendBeacon(this._url, body);
      }
    } catch (e) {
      this._error(e);
    }
  }

  /** Runs `fn` holding the queue's lock (Web Locks, else a lease in localStorage); skips it if the lock is taken and `wait` is false. */
  private async _lock(wait: boolean, fn: () => Promise<void>): Promise<void> {
    // A memory queue is this page's alone: nothing to share.
    if (this._kind === 'memory') return fn();
    const locks = nav()?.locks;
    let ran = false;
    if (locks)
      try {
        return void (await locks.request(this._o.storageName, { ifAvailable: !wait }, (lock) => lock && ((ran = true), fn())));
      } catch (e) {
        if (ran) throw e; // else the Web Locks API is refused here (SecurityError): use the lease
      }
    const holder = () => (this._getMeta('l') ?? '').split(',');
    const [tab, until] = holder();
    if (tab && tab !== this._tab && +until! > Date.now()) return;
    this._setMeta('l', `${this._tab},${Date.now() + LEASE_MS}`);
    await sleep(50); // another page's simultaneous claim lands in between: the last one wins
    if (holder()[0] !== this._tab) return;
    try {
      await fn();
    } finally {
      if (holder()[0] === this._tab) this._setMeta('l', null);
    }
  }

  /** [next attempt allowed at (ms), failed attempts in a row], shared by the origin's pages. */
  private _backoff(): [number, number] {
    const [until, attempt] = (this._getMeta('b') ?? '').split(',').map(Number);
    return [until || 0, attempt || 0];
  }

  /** Schedules the next cycle: when the backoff ends, else after flushInterval. */
  private _arm(): void {
    clearTimeout(this._t);
    if (this._closed) return;
    const wait = this._backoff()[0] - Date.now();
    // setTimeout fires at once beyond 2^31-1 ms; unref: a Node process does not wait for it.
    const t = (this._t = setTimeout(() => void this._cycle(), Math.min(wait > 0 ? wait : this._o.flushInterval, 2 ** 31 - 1)));
    (t as { unref?: () => void }).unref?.();
  }

  // --- small things ---

  private _getMeta(name: string): string | null {
    if (this._m.has(name)) return this._m.get(name)!;
    try {
      return localStorage.getItem(this._o.storageName + ':' + name);
    } catch {
      return null;
    }
  }

  private _setMeta(name: string, value: string | null): void {
    try {
      const key = this._o.storageName + ':' + name;
      if (value == null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
      this._m.delete(name);
    } catch {
      this._m.set(name, value);
    }
  }

  private _drop(count: number, reason: DropReason): void {
    this._st.dropped += count;
    safe(() => this._o.onDrop?.(count, reason));
  }

  private _error(e: unknown, extra?: Partial<LoggerError>): void {
    safe(() => this._o.onError?.(Object.assign(e instanceof Error ? e : new Error(String(e)), extra)));
  }
}

// One implementation behind every helper: `logger.addToWatchlist(assetId, extra)` is
// `logger.track({...extra, assetId, action: 'add_to_watchlist'})`.
for (const action of ACTIONS) {
  const numeric = (NUMERIC_FIELD as Partial<Record<Action, string>>)[action];
  Object.defineProperty(InteractionLogger.prototype, camelCase(action), {
    configurable: true,
    writable: true,
    value(this: InteractionLogger, assetId: string, a?: number | HelperExtra, b?: HelperExtra): string {
      const extra = numeric ? b : (a as HelperExtra | undefined);
      return this.track({ ...extra, assetId, action, ...(numeric ? { [numeric]: a } : {}) });
    },
  });
}
