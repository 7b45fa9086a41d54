// Serves the SDK's files over HTTP: dist/ (the bundle), examples/ and test/browser/ — nothing
// else of sdk/web (never node_modules). Used by `make run` for the example page and by the
// browser tests' driver (test/browser/driver.mjs) for the test pages.
//
//   node scripts/serve.mjs [host:port]     (default 127.0.0.1:8000; port 0 picks a free one)
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

/** Starts serving on host:port; resolves to the server once it listens. */
export function serve(host, port) {
  const server = createServer((req, res) => {
    let path;
    try {
      path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    } catch {
      path = '';
    }
    const file = join(root, path);
    const allowed = /^\/(dist|examples|test\/browser)\//.test(path) && file.startsWith(root + '/');
    if (!allowed || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': types[extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const address = process.argv[2] ?? '127.0.0.1:8000';
  const at = address.lastIndexOf(':');
  const server = await serve(address.slice(0, at), Number(address.slice(at + 1)));
  const { port } = server.address();
  process.stdout.write(`serving sdk/web at http://${address.slice(0, at)}:${port}/ (dist, examples)\n`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
