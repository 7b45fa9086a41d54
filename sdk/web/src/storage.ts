/**
 * Where the queue lives: IndexedDB, else localStorage, else memory. Every backend holds the
 * queued events as `key → event JSON`, the key being `<eventId>|<UTF-8 bytes of the JSON>`:
 * keys sort in eventId (UUIDv7, so tracking) order, and the queue's count and bytes are read
 * from the keys alone, without loading the events.
 */
export interface Backend {
  readonly kind: StorageKind;
  /** Every key, ascending (oldest first). */
  keys(): Promise<string[]>;
  /** The events of these keys (undefined for a key no longer stored). */
  get(keys: readonly string[]): Promise<(string | undefined)[]>;
  put(entries: readonly (readonly [string, string])[]): Promise<void>;
  del(keys: readonly string[]): Promise<void>;
}

export type StorageKind = 'indexeddb' | 'localstorage' | 'memory';

/** The event's size in bytes, from its key. */
export const keyBytes = (key: string): number => +key.slice(37);

/** When the event was tracked (the Unix milliseconds of its UUIDv7), from its key. */
export const keyTime = (key: string): number => parseInt(key.slice(0, 8) + key.slice(9, 13), 16);

/** How many of the oldest keys were tracked before `before` (ms). */
export function expired(keys: readonly string[], before: number): number {
  let n = 0;
  while (n < keys.length && keyTime(keys[n]!) < before) n++;
  return n;
}

/** How many of the oldest keys must go so that at most `maxEvents` and `maxBytes` remain. */
export function overflow(keys: readonly string[], maxEvents: number, maxBytes: number): number {
  let bytes = 0;
  for (const key of keys) bytes += keyBytes(key);
  let n = 0;
  while (n < keys.length && (keys.length - n > maxEvents || bytes > maxBytes)) bytes -= keyBytes(keys[n++]!);
  return n;
}

export function memoryBackend(): Backend {
  const map = new Map<string, string>();
  return {
    kind: 'memory',
    keys: async () => [...map.keys()].sort(),
    get: async (keys) => keys.map((k) => map.get(k)),
    put: async (entries) => void entries.forEach(([k, v]) => map.set(k, v)),
    del: async (keys) => void keys.forEach((k) => map.delete(k)),
  };
}

/** One key per event, `<prefix>q:<key>`; throws if localStorage cannot be written. */
export function localStorageBackend(prefix: string): Backend {
  const ls = localStorage;
  const p = prefix + 'q:';
  ls.setItem(p, '');
  ls.removeItem(p);
  return {
    kind: 'localstorage',
    keys: async () => {
      const keys: string[] = [];
      for (let i = 0; i < ls.length; i++) {
        const key = ls.key(i);
        if (key?.startsWith(p)) keys.push(key.slice(p.length));
      }
      return keys.sort();
    },
    get: async (keys) => keys.map((k) => ls.getItem(p + k) ?? undefined),
    put: async (entries) => {
      try {
        for (const [k, v] of entries) ls.setItem(p + k, v);
      } catch (e) {
        // All or nothing, like an IndexedDB transaction (a QuotaExceededError part-way).
        for (const [k] of entries) ls.removeItem(p + k);
        throw e;
      }
    },
    del: async (keys) => void keys.forEach((k) => ls.removeItem(p + k)),
  };
}

/** Database `name`, object store `q`; rejects if IndexedDB is missing, refused or too slow. */
export async function indexedDbBackend(name: string): Promise<Backend> {
  let db: Promise<IDBDatabase> | undefined;
  const open = (): Promise<IDBDatabase> =>
    (db ??= new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore('q');
      request.onsuccess = () => {
        const d = request.result;
        // Another version opened, or the browser closed the connection: reopen on next use.
        d.onversionchange = d.onclose = () => {
          d.close();
          db = undefined;
        };
        resolve(d);
      };
      request.onerror = request.onblocked = () => reject(request.error ?? new Error('IndexedDB blocked'));
      setTimeout(() => reject(new Error('IndexedDB did not open in time')), 3000);
    }));
  const run = async <T>(mode: IDBTransactionMode, fn: (store: IDBObjectStore) => T): Promise<T> => {
    try {
      const d = await open();
      return await new Promise<T>((resolve, reject) => {
        const tx = d.transaction('q', mode);
        const out = fn(tx.objectStore('q'));
        tx.oncomplete = () => resolve(out);
        tx.onerror = tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
      });
    } catch (e) {
      db = undefined;
      throw e;
    }
  };
  const backend: Backend = {
    kind: 'indexeddb',
    keys: async () => (await run('readonly', (s) => s.getAllKeys())).result as string[],
    get: async (keys) =>
      (await run('readonly', (s) => keys.map((k) => s.get(k)))).map((r) => r.result as string | undefined),
    put: (entries) => run('readwrite', (s) => void entries.forEach(([k, v]) => s.put(v, k))),
    del: (keys) => run('readwrite', (s) => void keys.forEach((k) => s.delete(k))),
  };
  await backend.keys();
  return backend;
}

/** The first backend that works, from `preferred` down the list. */
export async function openBackend(preferred: 'auto' | StorageKind, name: string): Promise<Backend> {
  if (preferred === 'auto' || preferred === 'indexeddb') {
    try {
      return await indexedDbBackend(name);
    } catch {
      /* next */
    }
  }
  if (preferred !== 'memory') {
    try {
      return localStorageBackend(name + ':');
    } catch {
      /* next */
    }
  }
  return memoryBackend();
}
