// The signed-in half of the dashboard: sign in (a one-time link from `ipsx dashboard`, or the
// wallet in the browser through EIP-4361), then the caller's own offers, running leases with
// their endpoints (to copy), earnings and spending. Everything comes from the node's API with
// the caller's session; the node answers each party with its own deals only, and endpoints
// (credentials) only to their requester. Nothing is written into the page as HTML.
"use strict";

const SESSION = "ipsx-session";
const ownEl = (id) => document.getElementById(id);

function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION));
  } catch {
    return null;
  }
}

function notice(text) {
  const line = ownEl("notice");
  line.textContent = text;
  line.hidden = !text;
}

async function api(path, options = {}) {
  const current = session();
  const headers = { ...(options.headers || {}) };
  if (current) headers.Authorization = `Bearer ${current.token}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, { ...options, headers });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error(body?.error?.message || `${answer.status}`);
    error.code = body?.error?.code;
    throw error;
  }
  return body;
}

function keep(answer) {
  sessionStorage.setItem(SESSION, JSON.stringify(answer));
}

// A login link carries its code in the fragment (never sent to any server): trade it once,
// then drop it from the address bar and the history.
async function fromLink() {
  const match = location.hash.match(/^#login=([0-9a-f]+)$/);
  if (!match) return;
  history.replaceState(null, "", location.pathname);
  try {
    keep(await api("/v1/auth/link/session", { method: "POST", body: JSON.stringify({ code: match[1] }) }));
  } catch (error) {
    notice(`This login link does not work (${error.code || error.message}): ask \`ipsx dashboard\` for a new one.`);
  }
}

function hex(text) {
  return "0x" + [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function withWallet() {
  const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
  const challenge = await api("/v1/auth/challenge", { method: "POST", body: JSON.stringify({ address }) });
  const signature = await window.ethereum.request({
    method: "personal_sign",
    params: [hex(challenge.message), address],
  });
  keep(await api("/v1/auth/session", { method: "POST", body: JSON.stringify({ nonce: challenge.nonce, signature }) }));
  start();
}

function row(values) {
  const tr = document.createElement("tr");
  for (const value of values) {
    const td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value);
    else td.textContent = value;
    tr.appendChild(td);
  }
  return tr;
}

function endpoints(lease) {
  const box = document.createElement("div");
  for (const endpoint of lease.endpoints || []) {
    for (const url of [endpoint.socks5h, endpoint.http].filter(Boolean)) {
      const line = document.createElement("div");
      line.className = "endpoint";
      const code = document.createElement("code");
      code.textContent = url;
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "copy";
      copy.addEventListener("click", async () => {
        await navigator.clipboard.writeText(url).catch(() => {});
        copy.textContent = "copied";
      });
      line.append(code, copy);
      box.appendChild(line);
    }
  }
  return box;
}

const earnedTimes = [];
const earnedValues = [];
let earnedPlot = null;

function drawEarned(at, earned) {
  earnedTimes.push(at);
  earnedValues.push(earned);
  while (earnedTimes.length > 1800) {
    earnedTimes.shift();
    earnedValues.shift();
  }
  const element = ownEl("earned-chart");
  if (!earnedPlot) {
    earnedPlot = new uPlot(
      {
        width: Math.max(320, element.clientWidth || 800),
        height: 160,
        axes: [{}, { label: "earned, IPSX" }],
        series: [{}, { label: "earned", stroke: "#12805c", fill: "rgba(18,128,92,.12)", width: 2 }],
      },
      [earnedTimes, earnedValues],
      element,
    );
  } else {
    earnedPlot.setData([earnedTimes, earnedValues]);
  }
  // Per hour, from the oldest sample of the last ten minutes.
  const from = earnedTimes.findIndex((t) => t >= at - 600);
  const seconds = at - earnedTimes[from];
  if (seconds > 0) {
    const perHour = ((earned - earnedValues[from]) / seconds) * 3600;
    ownEl("earning-rate").textContent = perHour.toFixed(6);
  }
}

async function refreshMine(me) {
  const [offers, deals, wallet] = await Promise.all([
    api("/v1/offers"),
    api("/v1/deals?status=pending,active&limit=1000"),
    api("/v1/wallet"),
  ]);
  ownEl("offers-table")
    .querySelector("tbody")
    .replaceChildren(
      ...offers.offers.map((o) => row([String(o.offer), o.country, o.kind, String(o.ips), String(o.idle), ipsx(o.price, 18)])),
    );
  let spend = 0n;
  ownEl("leases-table")
    .querySelector("tbody")
    .replaceChildren(
      ...deals.deals.map((lease) => {
        const requester = lease.requester.toLowerCase() === me;
        if (requester && lease.status === "active") spend += BigInt(lease.price) * BigInt(lease.ips.length);
        return row([
          String(lease.deal),
          requester ? "requester" : "provider",
          lease.status,
          lease.ips.join(" "),
          new Date(lease.end * 1000).toLocaleTimeString(),
          endpoints(lease),
        ]);
      }),
    );
  ownEl("spend-rate").textContent = ipsx(spend.toString(), 9);
  const payments = wallet.payments;
  const outbound = payments?.outbound;
  const inbound = payments?.inbound;
  // A wallet may be both; each half shows once it applies.
  show(".as-provider", Boolean(outbound) || offers.offers.length > 0);
  show(".as-requester", Boolean(inbound));
  ownEl("earned").textContent = ipsx(outbound?.amount ?? "0");
  ownEl("earned").dataset.base = String(outbound?.amount ?? "0");
  drawEarned(Date.now() / 1000, Number(ipsx(outbound?.amount ?? "0", 18)));
  if (outbound) {
    // What the provider's daemon claimed on chain of what the node signed (read on chain).
    const claims = await api("/v1/wallet/claims").catch(() => null);
    ownEl("claimed").textContent = claims ? `${ipsx(claims.claimed)} (${claims.status})` : "–";
  }
  ownEl("channel-left").textContent = inbound ? ipsx((BigInt(inbound.deposit) - BigInt(inbound.amount)).toString()) : "–";
  ownEl("spend-rate").dataset.base = spend.toString();
}

function show(selector, visible) {
  for (const element of document.querySelectorAll(selector)) element.hidden = !visible;
}

let timer = null;

async function start() {
  const current = session();
  const signIn = ownEl("sign-in");
  signIn.hidden = !window.ethereum || Boolean(current);
  ownEl("sign-out").hidden = !current;
  ownEl("mine").hidden = !current;
  ownEl("who").textContent = current ? current.address : "";
  clearInterval(timer);
  if (!current) return;
  const me = current.address.toLowerCase();
  const run = () =>
    refreshMine(me).catch((error) => {
      if (["session_expired", "invalid_session", "session_required"].includes(error.code)) {
        sessionStorage.removeItem(SESSION);
        notice("Your session ended: sign in again.");
        start();
      }
    });
  await run();
  timer = setInterval(run, 2000);
}

ownEl("sign-in").addEventListener("click", () => withWallet().catch((e) => notice(`Sign-in failed: ${e.message}`)));
ownEl("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(SESSION);
  start();
});
fromLink().then(start);
