// The node's public dashboard: depth (a chart and a table), the market's flow live over
// server-sent events, recent deals and the node's health. Everything comes from the node that
// served the page; nothing is loaded from anywhere else.
"use strict";

const $ = (id) => document.getElementById(id);
const WINDOW = 300; // seconds of lease rate kept on the chart
const PALETTE = ["#2f6fed", "#e4572e", "#12805c", "#a259ff", "#f3a712", "#29b6d1", "#8c564b"];

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function fill(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(
    ...rows.map((values) => {
      const row = document.createElement("tr");
      values.forEach((value) => cell(row, value));
      return row;
    }),
  );
}

// Token amounts come as decimal strings of base units (10^18 a token): shown in IPSX.
const UNIT = 10n ** 18n;
function ipsx(amount, digits = 6) {
  const value = BigInt(amount);
  const whole = value / UNIT;
  const fraction = (value % UNIT).toString().padStart(18, "0").slice(0, digits).replace(/0+$/, "");
  return fraction ? `${whole}.${fraction}` : whole.toString();
}

function width(element) {
  return Math.max(320, element.clientWidth || 800);
}

// ---- depth ------------------------------------------------------------------------------

// An IP serving three protocols is listed under each: count it once, at its largest level.
function byCountry(levels) {
  const once = new Map(); // country|kind|price -> IPs
  for (const level of levels) {
    const key = `${level.country}|${level.kind}|${level.price}`;
    once.set(key, Math.max(once.get(key) || 0, level.ips));
  }
  const rows = new Map(); // country|kind -> {ips, cheapest}
  const curves = new Map(); // country -> Map(price -> IPs)
  for (const [key, ips] of once) {
    const [country, kind, price] = key.split("|");
    const row = rows.get(`${country}|${kind}`) || { country, kind, ips: 0, cheapest: null };
    row.ips += ips;
    if (row.cheapest === null || BigInt(price) < BigInt(row.cheapest)) row.cheapest = price;
    rows.set(`${country}|${kind}`, row);
    const curve = curves.get(country) || new Map();
    curve.set(price, (curve.get(price) || 0) + ips);
    curves.set(country, curve);
  }
  return { rows: [...rows.values()].sort((a, b) => a.country.localeCompare(b.country)), curves };
}

let depthPlot = null;
let depthCountries = "";

function drawDepth(curves) {
  const countries = [...curves.keys()].sort();
  const prices = [...new Set(countries.flatMap((c) => [...curves.get(c).keys()]))].sort((a, b) =>
    BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0,
  );
  // The x axis in IPSX per IP-second (a float is fine for drawing).
  const xs = prices.map((p) => Number(ipsx(p, 18)));
  const data = [xs, ...countries.map((c) => prices.map((p) => curves.get(c).get(p) ?? null))];
  const element = $("depth-chart");
  if (depthPlot && depthCountries === countries.join(",")) {
    depthPlot.setData(data);
    return;
  }
  depthPlot?.destroy();
  depthCountries = countries.join(",");
  depthPlot = new uPlot(
    {
      width: width(element),
      height: 240,
      scales: { x: { time: false } },
      axes: [
        { label: "IPSX per IP-second", values: (_, ticks) => ticks.map((v) => +v.toPrecision(3)) },
        { label: "unleased IPs" },
      ],
      series: [
        { label: "price" },
        ...countries.map((country, i) => ({
          label: country,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          points: { show: true, size: 7 },
          spanGaps: false,
        })),
      ],
    },
    data,
    element,
  );
}

async function refreshDepth() {
  const answer = await fetch("/v1/market/depth");
  if (!answer.ok) return;
  const { levels } = await answer.json();
  const { rows, curves } = byCountry(levels);
  fill(
    $("depth-table"),
    rows.map((row) => [row.country, row.kind, String(row.ips), ipsx(row.cheapest, 18)]),
  );
  drawDepth(curves);
}

// ---- flow -------------------------------------------------------------------------------

const times = [];
const rates = [];
let last = null;
const ratePlot = new uPlot(
  {
    width: width($("rate-chart")),
    height: 200,
    axes: [{}, { label: "deals made per second" }],
    series: [{}, { label: "leases/s", stroke: "#2f6fed", fill: "rgba(47,111,237,.12)", width: 2 }],
  },
  [times, rates],
  $("rate-chart"),
);

function onTick(tick) {
  if (last !== null && tick.at > last.at) {
    const rate = (tick.deals_made - last.deals_made) / (tick.at - last.at);
    times.push(tick.at);
    rates.push(rate);
    while (times.length > WINDOW) {
      times.shift();
      rates.shift();
    }
    ratePlot.setData([times, rates]);
    $("lease-rate").textContent = rate.toFixed(rate < 10 ? 1 : 0);
  }
  last = tick;
  $("ips-leased").textContent = String(tick.ips_leased);
  $("deals-made").textContent = String(tick.deals_made);
  $("open-deals").textContent = String(tick.open_deals);
}

function follow() {
  const live = new EventSource("/v1/market/live");
  live.addEventListener("tick", (event) => onTick(JSON.parse(event.data)));
  // EventSource reconnects by itself; the health line says when the node is gone.
}

// ---- recent deals and health ------------------------------------------------------------

async function refreshRecent() {
  const answer = await fetch("/v1/market/recent");
  if (!answer.ok) return;
  const { deals } = await answer.json();
  fill(
    $("recent-table"),
    deals.map((deal) => [
      new Date(deal.start * 1000).toLocaleTimeString(),
      String(deal.ips),
      String(deal.seconds),
      ipsx(deal.price, 18),
    ]),
  );
}

async function refreshHealth() {
  const line = $("health");
  try {
    const answer = await fetch("/v1/health");
    const { status } = await answer.json();
    line.textContent = `node: ${status.replace("_", " ")}`;
    line.dataset.status = status === "ok" ? "ok" : "down";
  } catch {
    line.textContent = "node: unreachable";
    line.dataset.status = "down";
  }
}

function every(seconds, work) {
  const run = () => work().catch(() => {});
  run();
  setInterval(run, seconds * 1000);
}

follow();
every(2, refreshDepth);
every(2, refreshRecent);
every(5, refreshHealth);
