// Builds gate.js into a component: `node build.mjs OUT.wasm` (after `npm ci`).
//
// componentize-js reads the WIT through a WebAssembly component of its own
// (the "splicer") that runs on jco's WASI shim, `@bytecodealliance/preview2-shim`.
// Since shim 0.26 (the one jco 1.35 brings) no folder is preopened by default,
// so the splicer cannot see the WIT and fails with "No such file or directory
// (os error 44)". This script preopens the WIT folder, and only it, in that
// shim before calling componentize-js's `componentize()`.
//
// `jco componentize` (the CLI) fails the same way, earlier: before calling
// componentize-js it probes the WIT for an old `wasi:http` with a wasm-tools
// component on its own copy of the shim ("failed to get path metadata (os
// error 44)"). It works with a preload that adds a preopen to that copy:
//   node --import ./preopen.mjs node_modules/@bytecodealliance/jco/dist/jco.js \
//     componentize gate.js --wit ../../plugin-sdk/wit --world-name gate --disable all -o OUT.wasm
// where preopen.mjs is
//   import { _addPreopen } from './node_modules/@bytecodealliance/jco-transpile/node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js';
//   _addPreopen('/', '/');

import { componentize, version } from '@bytecodealliance/componentize-js';
import { _addPreopen } from '@bytecodealliance/preview2-shim/filesystem';
import { rename, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.wasm');
  process.exit(2);
}
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const wit = here('../../plugin-sdk/wit');
_addPreopen(wit, wit);
const started = Date.now();
const { component } = await componentize({
  sourcePath: here('./gate.js'),
  witPath: wit,
  worldName: 'resetgate:plugin/gate@0.2.1',
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
