// Runs solcjs (npm `solc`) in standard-JSON mode for forge: reads the input on stdin, writes the
// output JSON to the file named as the first argument (node's stdout into a pipe can be cut at
// 128 KiB when the process exits, so the shell wrapper prints the file instead).
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const [outFile, ...flags] = process.argv.slice(2);
const baseIndex = flags.indexOf('--base-path');
const base = baseIndex >= 0 ? flags[baseIndex + 1] : process.cwd();

function findImports(importPath) {
  for (const root of [base, process.cwd(), path.join(process.cwd(), 'node_modules')]) {
    const candidate = path.resolve(root, importPath);
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath}` };
}

const input = fs.readFileSync(0, 'utf8');
const output = solc.compile(input, { import: findImports });
fs.writeFileSync(outFile, output);
