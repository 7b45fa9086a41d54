/** Largest body sent on page hide (keepalive fetch / sendBeacon), in bytes. */
export const MAX_UNLOAD_BODY_BYTES = 65_536;

/** A queued event: its eventId, its JSON text and that text's size in UTF-8 bytes. */
export interface QueuedEvent {
  id: string;
  json: string;
  bytes: number;
}

const encoder = /* @__PURE__ */ new TextEncoder();

/** Size of a string in UTF-8 bytes. */
export const utf8Bytes = (text: string): number => encoder.encode(text).length;

/** Current time, RFC 3339 in UTC with milliseconds. */
export const rfc3339 = (at: number | string | Date = Date.now()): string => new Date(at).toISOString();

/**
 * A request body: `{"sentAt": …, "batch": [...]}`, with `"apiKey"` first for the text/plain
 * form sent on page hide (which can carry no header).
 */
export function requestBody(events: readonly QueuedEvent[], sentAt: string, apiKey?: string): string {
  return `{${apiKey === undefined ? '' : `"apiKey":${JSON.stringify(apiKey)},`}"sentAt":"${sentAt}","batch":[${events
    .map((e) => e.json)
    .join(',')}]}`;
}

/**
 * Splits events, in order, into groups whose bodies (`envelopeBytes` of everything but the
 * events, plus the events and the commas between them) fit in `maxBytes`. An event too large
 * on its own gets a group of its own.
 */
export function split<T extends QueuedEvent>(events: readonly T[], maxBytes: number, envelopeBytes: number): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let size = envelopeBytes;
  for (const event of events) {
    const extra = event.bytes + (group.length ? 1 : 0);
    if (group.length && size + extra > maxBytes) {
      groups.push(group);
      group = [];
      size = envelopeBytes;
      size += event.bytes;
    } else size += extra;
    group.push(event);
  }
  if (group.length) groups.push(group);
  return groups;
}
