// Copies each contract's ABI and bytecode from forge's build output into abi/<Name>.json, the
// files the Rust crates' alloy `sol!` bindings read (committed, so Rust builds need no forge).
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
fs.mkdirSync(path.join(root, 'abi'), { recursive: true });
for (const name of ['IPSXToken', 'FundingSale', 'Centralizer']) {
  const artifact = JSON.parse(fs.readFileSync(path.join(root, 'out', `${name}.sol`, `${name}.json`), 'utf8'));
  const exported = { contractName: name, abi: artifact.abi, bytecode: artifact.bytecode.object };
  fs.writeFileSync(path.join(root, 'abi', `${name}.json`), JSON.stringify(exported, null, 2) + '\n');
}
console.log('ABIs exported to abi/');
