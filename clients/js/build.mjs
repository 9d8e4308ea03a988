#!/usr/bin/env node
// Builds the package: tsc compiles src/ to dist/ (ES modules and .d.ts), esbuild bundles and
// minifies it into one ES module (dist/wsgate-client.min.js: the demo page serves it, the size
// check measures it). The toolchain comes from $WSGATE_NODE_DIR, else $WSGATE_CACHE/node (where
// scripts/setup installs it), else this folder's own node_modules (after `npm install`).
//
// Usage: node build.mjs [--out DIR]   (default: dist/ beside this file)
// Prints the bundle's size, minified and gzipped, as "size: <min> bytes, <gz> bytes gzipped".
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));

export function toolchainDir() {
  const cache = process.env.WSGATE_CACHE || join(homedir(), '.cache', 'wsgate');
  const dirs = [process.env.WSGATE_NODE_DIR, join(cache, 'node'), here].filter(Boolean);
  for (const d of dirs) if (existsSync(join(d, 'node_modules', 'typescript'))) return d;
  throw new Error(`typescript not found in ${dirs.join(', ')}: run scripts/setup (or npm install here)`);
}

export function build(out = join(here, 'dist')) {
  const tools = join(toolchainDir(), 'node_modules');
  mkdirSync(out, { recursive: true });
  execFileSync(process.execPath, [join(tools, 'typescript', 'bin', 'tsc'), '-p', here, '--outDir', out], { stdio: 'inherit' });
  const bundle = join(out, 'wsgate-client.min.js');
  execFileSync(join(tools, '.bin', 'esbuild'), [join(here, 'src', 'index.ts'), '--bundle', '--format=esm',
    '--minify', '--target=es2020', `--outfile=${bundle}`, '--log-level=warning'], { stdio: 'inherit' });
  const min = readFileSync(bundle);
  return { bundle, min: min.length, gz: gzipSync(min, { level: 9 }).length };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--out');
  const r = build(i > 0 ? resolve(process.argv[i + 1]) : undefined);
  console.log(`size: ${r.min} bytes, ${r.gz} bytes gzipped (${r.bundle})`);
}
