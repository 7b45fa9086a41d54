// npm test (after the build): compiles test/*.test.ts with esbuild (Node 20 cannot run
// TypeScript) into node_modules/.cache/test-build and runs them with Node's test runner.
// test/size.test.ts checks the size budget of dist/interaction-logger.min.js.
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'node_modules', '.cache', 'test-build');
rmSync(out, { recursive: true, force: true });
const tests = readdirSync(join(root, 'test')).filter((f) => f.endsWith('.test.ts'));
await build({
  absWorkingDir: root,
  entryPoints: tests.map((f) => join('test', f)),
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'inline',
  logLevel: 'warning',
});
const files = tests.map((f) => join(out, f.replace(/\.ts$/, '.mjs')));
const run = spawnSync(process.execPath, ['--enable-source-maps', '--test', '--test-timeout=60000', ...files], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
