// npm run build: dist/index.js (ESM) + .d.ts, and dist/interaction-logger.min.js (IIFE, global
// `InteractionLogger`). Prints the IIFE's size, minified and gzipped.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });

const common = { bundle: true, target: 'es2020', legalComments: 'none', logLevel: 'warning', absWorkingDir: root };
await build({ ...common, entryPoints: ['src/index.ts'], format: 'esm', outfile: 'dist/index.js', sourcemap: true });
await build({
  ...common,
  entryPoints: ['src/iife.ts'],
  format: 'iife',
  minify: true,
  // Private members are named `_x`: shorten them (the public API keeps its names).
  mangleProps: /^_/,
  outfile: 'dist/interaction-logger.min.js',
});

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(
  process.execPath,
  [tsc, '-p', 'tsconfig.json', '--noEmit', 'false', '--declaration', '--emitDeclarationOnly', '--outDir', 'dist'],
  { cwd: root, stdio: 'inherit' },
);
rmSync(join(dist, 'iife.d.ts'), { force: true });

const min = readFileSync(join(dist, 'interaction-logger.min.js'));
console.log(
  `dist/interaction-logger.min.js: ${min.length} bytes minified, ${gzipSync(min, { level: 9 }).length} bytes min+gzip (budget 6144)`,
);
