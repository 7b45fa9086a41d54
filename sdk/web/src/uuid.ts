let lastMs = -1;
let seq = 0;

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter (`rand_a`, RFC 9562
 * §6.2 method 1) started at a random value each millisecond, then 62 random bits. Strictly
 * increasing within one page, even when the clock stands still or steps back (the timestamp
 * then stays at the last one and the counter moves on; a counter overflow advances the
 * timestamp by 1 ms), so the ids sort in the order the events were tracked.
 */
export function uuidv7(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    seq = Math.floor(Math.random() * 0x800); // leaves room for 2048 ids in this millisecond
  } else if (++seq > 0xfff) {
    lastMs++;
    seq = 0;
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  let ms = lastMs;
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = 0x80 | (b[8]! & 0x3f);
  let hex = '';
  for (const byte of b) hex += (byte + 256).toString(16).slice(1);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
