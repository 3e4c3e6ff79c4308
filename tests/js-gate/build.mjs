// Builds gate.js into a component: `node build.mjs OUT.wasm` (after `npm ci`).
//
// It calls componentize-js's `componentize()` itself rather than running
// `jco componentize`: jco 1.35's CLI first probes the WIT for an old
// `wasi:http` with a wasm-tools component whose WASI shim has no preopened
// folder, and fails with "failed to get path metadata (os error 44)" (a
// preload calling the shim's `_addPreopen('/', '/')` works around it).
// componentize-js reads the WIT itself and does not.
//
// The equivalent CLI, with that preload:
//   jco componentize gate.js --wit ../../plugin-sdk/wit --world-name gate --disable all -o OUT.wasm

import { componentize, version } from '@bytecodealliance/componentize-js';
import { rename, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const started = Date.now();
const { component } = await componentize({
  sourcePath: here('./gate.js'),
  witPath: here('../../plugin-sdk/wit'),
  worldName: 'resetgate:plugin/gate@0.1.0',
  // No WASI features: no console (stdio), no Math.random/crypto (random), no
  // Date.now/performance.now (clocks), no fetch (http, fetch-event). The
  // component still imports the world's every capability (componentize-js
  // keeps them all) and the WASI interfaces StarlingMonkey's runtime needs.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
// Written under a temporary name, then renamed: a half-written file is never taken for a build.
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
const secs = ((Date.now() - started) / 1000).toFixed(1);
console.error(`js-gate: ${out} (${component.length} bytes, componentize-js ${version}, ${secs} s)`);
