// Prints what Vite's own `loadEnv` reads from the `.env` in each given directory.
//
//   node roundtrip.mjs [--vite <vite-package-dir>] <env-dir>...
//
// The Vite package directory (e.g. app-template/node_modules/vite) comes from
// `--vite` or else the VITE_PKG_DIR environment variable. For each <env-dir> one line
// is printed: JSON.stringify(loadEnv('development', envDir, '')).
//
// The process environment is emptied before loading: with the prefix '' loadEnv would
// add every process variable to its answer, and a process variable wins over the file.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
let viteDir = process.env.VITE_PKG_DIR;
if (args[0] === '--vite') {
  viteDir = args[1];
  args.splice(0, 2);
}
if (!viteDir || args.length === 0) {
  console.error('usage: node roundtrip.mjs [--vite <vite-package-dir>] <env-dir>...  (or set VITE_PKG_DIR)');
  process.exit(2);
}
viteDir = resolve(viteDir);

const pkg = JSON.parse(readFileSync(join(viteDir, 'package.json'), 'utf8'));
let entry = pkg.exports?.['.'] ?? pkg.module ?? pkg.main;
while (entry && typeof entry === 'object') entry = entry.import ?? entry.default;
const { loadEnv } = await import(pathToFileURL(join(viteDir, entry)).href);
if (typeof loadEnv !== 'function') {
  console.error(`no loadEnv export in ${viteDir} (version ${pkg.version})`);
  process.exit(1);
}

for (const dir of args) {
  for (const key of Object.keys(process.env)) delete process.env[key];
  process.stdout.write(JSON.stringify(loadEnv('development', resolve(dir), '')) + '\n');
}
