// Headless Debian Chromium for the browser tests of the SDK (tests/e2e/browser.rs), driven by
// playwright-core. The Rust test owns the real services (ingest-api, PostgreSQL, the proxy that
// cuts the database) and the assertions; this process owns the browser and the page's origin.
//
// It serves sdk/web (dist/, examples/, test/browser/) at http://localhost:<port> — a different
// origin from ingest-api's http://127.0.0.1:<port> — prints one line
//   {"origin": "http://localhost:<port>", "chromium": "<version>"}
// then answers one JSON command per stdin line with one JSON line on stdout:
//   {"id": 1, "op": "open", "tab": "a", "path": "/test/browser/page.html?…"}  → {"id": 1, "ok": null}
//   op "proxy" (target: ingest-api's URL; answers the URL pages must send to),
//   "eval" (tab, js: an expression, awaited), "reload" (tab), "click" (tab, selector),
//   "requests" (every request through the proxy so far), "errors" (uncaught exceptions and
//   unhandled rejections of every page)
// A failed command answers {"id": …, "error": "…"}. When stdin closes it closes Chromium
// (which removes its profile) and exits.
import { existsSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { createInterface } from 'node:readline';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  process.stderr.write(`Chromium not found at ${executablePath}: run scripts/ensure-browser.sh (make test does)\n`);
  process.exit(2);
}

const server = await serve('127.0.0.1', 0);
const origin = `http://localhost:${server.address().port}`;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // The machine has no network but loopback: without the background-networking flags Chromium
  // keeps trying Google's hosts. --no-sandbox: CI runs as root.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-quic',
    '--no-first-run',
  ],
});
// One context: its tabs share the origin's storage (IndexedDB, localStorage, Web Locks), as
// the tabs of one browser profile do.
const context = await browser.newContext();
const tabs = new Map();
const errors = [];
const requests = [];
const started = Date.now();

/** The eventIds of a batch body (JSON array, or the beacon form's object), gunzipped first. */
function eventIds(buffer, encoding) {
  if (!buffer) return [];
  try {
    const text = (encoding === 'gzip' ? gunzipSync(buffer) : buffer).toString('utf8');
    const body = JSON.parse(text);
    const items = Array.isArray(body) ? body : (body.batch ?? body.events ?? []);
    return items.map((item) => item.eventId ?? null);
  } catch (e) {
    return [`unreadable body: ${e.message}`];
  }
}

/**
 * A recording reverse proxy in front of ingest-api (`target`): the pages send to it, it
 * forwards every request as it came and keeps what it saw (arrival time, method, headers,
 * the body's eventIds, the answer). Playwright's own request events cannot serve: they miss
 * the keepalive requests of a page that is already gone and the bodies of gzip Blobs. When
 * ingest-api is down the proxy drops the browser's connection, so the page sees a network
 * error as it would without the proxy.
 */
async function startProxy(target) {
  const upstream = new URL(target);
  const proxy = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const entry = {
        at: Date.now() - started,
        method: req.method,
        path: req.url,
        contentType: req.headers['content-type'] ?? null,
        contentEncoding: req.headers['content-encoding'] ?? null,
        ids: req.method === 'POST' ? eventIds(body, req.headers['content-encoding']) : [],
        status: null,
        retryAfter: null,
        failure: null,
      };
      requests.push(entry);
      const forward = httpRequest(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          entry.status = answer.statusCode;
          entry.retryAfter = answer.headers['retry-after'] ?? null;
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forward.on('error', (e) => {
        entry.failure = e.code ?? String(e);
        req.socket.destroy();
      });
      forward.end(body);
    });
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(undefined)));
  return `http://127.0.0.1:${proxy.address().port}`;
}

function tab(name) {
  const page = tabs.get(name);
  if (!page) throw new Error(`no tab ${name}`);
  return page;
}

const commands = {
  async open({ tab: name, path }) {
    const page = await context.newPage();
    page.on('pageerror', (error) => errors.push({ tab: name, message: String(error) }));
    tabs.set(name, page);
    await page.goto(origin + path);
    return null;
  },
  eval: ({ tab: name, js }) => tab(name).evaluate(js),
  async reload({ tab: name }) {
    await tab(name).reload();
    return null;
  },
  async click({ tab: name, selector }) {
    await tab(name).click(selector);
    return null;
  },
  proxy: ({ target }) => startProxy(target),
  requests: () => requests,
  async errors() {
    // A round trip to every open page first: the protocol delivers a page's events in order,
    // so an error the page raised before it is recorded by the time it returns.
    await Promise.all([...tabs.values()].map((page) => page.evaluate('0').catch(() => {})));
    return errors;
  },
};

process.stdout.write(JSON.stringify({ origin, chromium: browser.version() }) + '\n');

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let id = null;
  try {
    const command = JSON.parse(line);
    id = command.id;
    const run = commands[command.op];
    if (!run) throw new Error(`unknown op ${command.op}`);
    const ok = (await run(command)) ?? null;
    process.stdout.write(JSON.stringify({ id, ok }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ id, error: String(e?.stack ?? e) }) + '\n');
  }
}
await browser.close();
// The static server and the proxies would keep the process alive.
process.exit(0);
