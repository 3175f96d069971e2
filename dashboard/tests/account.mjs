// The signed-in dashboard in a real headless Chromium, opened from `ipsx dashboard` links:
//
//   node dashboard/tests/account.mjs <expectations.json> <output folder>
//
// expectations.json: { "provider": {"url", "deals": [ids], "ips": [..]},
//                      "requester": {"url", "deals": [ids]},
//                      "stranger": {"deals": [ids], "ips": [..]},   (another provider's)
//                      "wallet": {"key", "deals": [ids]} }   (signs in through a browser wallet)
// The provider's page lists its offers and running leases, shows its earnings growing, and
// shows neither the other provider's deals nor any credentials; the requester's page lists
// its leases with endpoints to copy, its spending and its channel; a login link works once;
// a forged session shows nothing.
// Writes provider.png and requester.png. Exits non-zero, saying why, if anything fails.
import { finish, launch } from "./browser.mjs";
import { Wallet, getBytes } from "ethers";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const [file, out] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(file, "utf8"));
const browser = await launch();
const failures = [];
const check = (ok, what) => ok || failures.push(what);
const text = (page, selector) => page.textContent(selector);
const WAIT = { timeout: 30_000 };

async function open(url) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1500 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(url).origin });
  const page = await context.newPage();
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#mine:not([hidden])", WAIT);
  return { context, page };
}

const rowsOf = (page, table) =>
  page.$$eval(`#${table} tbody tr`, (rows) => rows.map((row) => row.textContent));

try {
  // The provider.
  const { context, page } = await open(expected.provider.url);
  check(!page.url().includes("login="), "the link's code left the address bar");
  await page.waitForFunction(() => document.querySelectorAll("#offers-table tbody tr").length > 0, null, WAIT);
  await page.waitForFunction(
    (deals) => {
      const text = document.querySelector("#leases-table tbody").textContent;
      return deals.every((deal) => text.includes(String(deal)));
    },
    expected.provider.deals,
    WAIT,
  );
  // Earnings in base units (the shown IPSX figure rounds): they grow as the node pays.
  await page.waitForFunction(() => BigInt(document.querySelector("#earned").dataset.base || "0") > 0n, null, WAIT);
  const earned = await page.evaluate(() => document.querySelector("#earned").dataset.base);
  await page.waitForFunction(
    (earned) => BigInt(document.querySelector("#earned").dataset.base || "0") > BigInt(earned),
    earned,
    WAIT,
  );
  await page.waitForFunction(() => document.querySelector("#claimed").textContent.includes("(open)"), null, WAIT);
  const leases = await rowsOf(page, "leases-table");
  for (const deal of expected.stranger.deals) {
    check(!leases.some((row) => row.startsWith(String(deal))), `the provider sees another's deal ${deal}`);
  }
  const whole = await page.textContent("body");
  for (const ip of expected.stranger.ips) check(!whole.includes(ip), `the provider sees another's IP ${ip}`);
  check(!whole.includes("socks5h://") && !/http:\/\/[^ ]*@/.test(whole), "the provider sees credentials");
  await page.screenshot({ path: join(out, "provider.png"), fullPage: true });
  await context.close();

  // The same link again: refused.
  const again = await browser.newPage();
  await again.goto(expected.provider.url, { waitUntil: "load" });
  await again.waitForSelector("#notice:not([hidden])", WAIT);
  check((await text(again, "#notice")).includes("does not work"), "a login link works twice");
  check(await again.isHidden("#mine"), "a used link still signs in");
  await again.close();

  // A forged session (a token the node never MACed): no data, and the page says so.
  const forged = await browser.newContext();
  await forged.addInitScript(() =>
    sessionStorage.setItem(
      "ipsx-session",
      JSON.stringify({ token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", address: "0x0000000000000000000000000000000000000001" }),
    ),
  );
  const forgedPage = await forged.newPage();
  await forgedPage.goto(new URL("/", expected.provider.url).href, { waitUntil: "load" });
  await forgedPage.waitForSelector("#notice:not([hidden])", WAIT);
  check((await text(forgedPage, "#notice")).includes("session ended"), "a forged session is refused");
  check(await forgedPage.isHidden("#mine"), "a forged session shows nothing");
  check((await forgedPage.$$("#leases-table tbody tr")).length === 0, "a forged session lists no lease");
  await forged.close();

  // The requester.
  const requester = await open(expected.requester.url);
  await requester.page.waitForFunction(
    (deals) => {
      const text = document.querySelector("#leases-table tbody").textContent;
      return deals.every((deal) => text.includes(String(deal)));
    },
    expected.requester.deals,
    WAIT,
  );
  const codes = await requester.page.$$eval(".endpoint code", (codes) => codes.map((c) => c.textContent));
  check(codes.some((url) => url.startsWith("socks5h://")), "the requester's endpoints show");
  await requester.page.click(".endpoint .copy");
  const copied = await requester.page.evaluate(() => navigator.clipboard.readText());
  check(copied === codes[0], `copy put ${copied} on the clipboard, not ${codes[0]}`);
  await requester.page.waitForFunction(
    () => BigInt(document.querySelector("#spend-rate").dataset.base || "0") > 0n,
    null,
    WAIT,
  );
  check((await text(requester.page, "#channel-left")) !== "–", "the channel's balance shows");
  await requester.page.screenshot({ path: join(out, "requester.png"), fullPage: true });
  await requester.context.close();

  // Signing in with a wallet in the browser (EIP-1193 provider, EIP-4361 message): the
  // page asks the wallet for its account and a personal_sign of the node's challenge.
  const wallet = new Wallet(expected.wallet.key);
  const walletContext = await browser.newContext();
  await walletContext.exposeFunction("testWalletSign", (message) => wallet.signMessage(getBytes(message)));
  await walletContext.addInitScript((address) => {
    window.ethereum = {
      request: async ({ method, params }) => {
        if (method === "eth_requestAccounts") return [address];
        if (method === "personal_sign") return window.testWalletSign(params[0]);
        throw new Error(`unsupported ${method}`);
      },
    };
  }, wallet.address);
  const walletPage = await walletContext.newPage();
  walletPage.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await walletPage.goto(new URL("/", expected.requester.url).href, { waitUntil: "load" });
  await walletPage.click("#sign-in");
  await walletPage.waitForSelector("#mine:not([hidden])", WAIT);
  check((await text(walletPage, "#who")).toLowerCase() === wallet.address.toLowerCase(), "signed in as the wallet");
  await walletPage.waitForFunction(
    (deals) => {
      const text = document.querySelector("#leases-table tbody").textContent;
      return deals.every((deal) => text.includes(String(deal)));
    },
    expected.wallet.deals,
    WAIT,
  );
  await walletContext.close();
} catch (error) {
  failures.push(String(error));
} finally {
  await browser.close();
}
finish(failures);
console.log("signed-in dashboard: ok");
