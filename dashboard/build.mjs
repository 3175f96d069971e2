// Copies the chart library the dashboard uses from its pinned npm package into the node's
// embedded assets (gateway/src/dashboard/assets/vendor/), so a Rust build needs no npm.
//
//   node build.mjs           copy
//   node build.mjs --check   fail if the committed copies differ from the package's files
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "gateway", "src", "dashboard", "assets", "vendor");
const files = [
  ["uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["uplot/dist/uPlot.min.css", "uPlot.min.css"],
];
const check = process.argv.includes("--check");
let stale = 0;
mkdirSync(vendor, { recursive: true });
for (const [from, to] of files) {
  const source = readFileSync(join(here, "node_modules", from));
  const target = join(vendor, to);
  if (check) {
    let committed = null;
    try {
      committed = readFileSync(target);
    } catch {}
    if (!committed || !committed.equals(source)) {
      console.error(`dashboard: ${to} differs from node_modules/${from} (run node dashboard/build.mjs)`);
      stale += 1;
    }
  } else {
    writeFileSync(target, source);
  }
}
if (stale) process.exit(1);
console.log(check ? "dashboard assets match the pinned packages" : "dashboard assets copied");
