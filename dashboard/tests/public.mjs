// The public dashboard in a real headless Chromium (Debian's, driven by playwright-core):
//
//   node dashboard/tests/public.mjs <node URL> <output folder> <countries, e.g. DE,FR>
//
// Checks that the depth table lists every offered country, that the deals counter moves while
// the market leases, that recent deals and the node's health show, that the page asks nothing
// of any host but the node and throws no error; writes public.png into the output folder.
// Exits non-zero, saying why, if anything fails. Driven by gateway/tests/dashboard_in_a_browser.rs.
import { finish, launch } from "./browser.mjs";
import { join } from "node:path";

const [base, out, countries] = process.argv.slice(2);
if (!base || !out || !countries) {
  console.error("usage: public.mjs <node URL> <output folder> <countries>");
  process.exit(2);
}
const browser = await launch();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
  const elsewhere = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(base)) elsewhere.push(request.url());
  });
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await page.goto(base + "/", { waitUntil: "load" });

  const wanted = countries.split(",");
  await page.waitForFunction(
    (wanted) => {
      const cells = [...document.querySelectorAll("#depth-table tbody tr td:first-child")];
      const shown = new Set(cells.map((cell) => cell.textContent));
      return wanted.every((country) => shown.has(country));
    },
    wanted,
    { timeout: 20_000 },
  );
  const points = await page.evaluate(() => document.querySelectorAll("#depth-chart canvas").length);
  if (points === 0) failures.push("the depth chart drew nothing");

  const deals = async () => Number(await page.textContent("#deals-made"));
  await page.waitForFunction(() => Number(document.querySelector("#deals-made").textContent) > 0, null, {
    timeout: 20_000,
  });
  const first = await deals();
  await page.waitForFunction(
    (first) => Number(document.querySelector("#deals-made").textContent) > first,
    first,
    { timeout: 20_000 },
  );
  const later = await deals();
  await page.waitForFunction(() => document.querySelectorAll("#recent-table tbody tr").length > 0, null, {
    timeout: 20_000,
  });
  await page.waitForFunction(() => document.querySelector("#health").dataset.status === "ok", null, {
    timeout: 20_000,
  });
  // One more second of rate on the chart before the picture.
  await page.waitForFunction(
    (later) => Number(document.querySelector("#deals-made").textContent) > later,
    later,
    { timeout: 20_000 },
  );
  await page.screenshot({ path: join(out, "public.png"), fullPage: true });
  if (elsewhere.length) failures.push(`requests to other hosts: ${elsewhere.join(", ")}`);
  console.log(JSON.stringify({ deals_first: first, deals_later: later, screenshot: join(out, "public.png") }));
} catch (error) {
  failures.push(String(error));
} finally {
  await browser.close();
}
finish(failures);
