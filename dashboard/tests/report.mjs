// A benchmark report opened in a real headless Chromium, from the file alone (no server, no
// network): every chart draws, nothing fails, and a screenshot is written.
//
//   node dashboard/tests/report.mjs <report.html> <screenshot.png> <charts expected>
import { finish, launch } from "./browser.mjs";
import { pathToFileURL } from "node:url";

const [file, png, charts] = process.argv.slice(2);
const browser = await launch();
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const elsewhere = [];
  page.on("request", (request) => {
    if (!request.url().startsWith("file:")) elsewhere.push(request.url());
  });
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
  const drawn = await page.$$eval(".uplot canvas", (canvases) => canvases.length);
  if (drawn !== Number(charts)) failures.push(`${drawn} charts drawn, ${charts} expected`);
  const rows = await page.$$eval("table tr", (rows) => rows.length);
  if (rows === 0) failures.push("no table");
  if (elsewhere.length) failures.push(`requests beyond the file: ${elsewhere.join(", ")}`);
  await page.screenshot({ path: png, fullPage: true });
} catch (error) {
  failures.push(String(error));
} finally {
  await browser.close();
}
finish(failures);
