// Copies each contract's ABI and bytecode from forge's build output into abi/<Name>.json, the
// files the Rust crates' alloy `sol!` bindings read (committed, so Rust builds need no forge).
// `--check` writes nothing and fails if a committed file differs from the build (CI runs it, so
// Rust and Solidity cannot drift).
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const check = process.argv.includes('--check');
fs.mkdirSync(path.join(root, 'abi'), { recursive: true });
let stale = [];
for (const name of ['IPSXToken', 'FundingSale', 'Centralizer', 'DealAnchor']) {
  const artifact = JSON.parse(fs.readFileSync(path.join(root, 'out', `${name}.sol`, `${name}.json`), 'utf8'));
  const exported = { contractName: name, abi: artifact.abi, bytecode: artifact.bytecode.object };
  const text = JSON.stringify(exported, null, 2) + '\n';
  const file = path.join(root, 'abi', `${name}.json`);
  if (check) {
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (committed !== text) stale.push(`abi/${name}.json`);
  } else {
    fs.writeFileSync(file, text);
  }
}
if (stale.length > 0) {
  console.error(`out of date with the Solidity sources: ${stale.join(', ')} (run: node scripts/export-abi.js)`);
  process.exit(1);
}
console.log(check ? 'ABIs in abi/ match the build' : 'ABIs exported to abi/');
