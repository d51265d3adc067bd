// Server-rendered HTML.  Every value from the database goes through esc().
// The data-testid / data-* attributes are the contract the smoke test and
// tests/app_spec.lua read; the page script (public/app.js) uses them too.
import type { ConnectionStatus } from "../generated/prisma/client.ts";
import type { ProviderInfo } from "./providers.ts";
import { isoDate, WINDOW_DAYS, type DailyPoint, type Totals, type Window } from "./queries.ts";

export function esc(value: unknown): string {
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const STYLE = `
body{font-family:system-ui,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}
header{background:#1d2433;color:#fff;padding:.8rem 1.5rem}header a{color:#fff;text-decoration:none}
main{max-width:1100px;margin:1.5rem auto;padding:0 1rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
.card,.panel{background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}
.card h2{margin:0 0 .4rem;font-size:1.1rem}
.status{font-weight:600}.status[data-status=CONNECTED]{color:#137333}.status[data-status=NOT_CONNECTED]{color:#a50e0e}
dl{display:grid;grid-template-columns:repeat(4,1fr);gap:.4rem;margin:.8rem 0 0}
dt{font-size:.75rem;color:#5f6b7a}dd{margin:0;font-weight:600}
.panel{margin-top:1.5rem}ol.messages{list-style:none;padding:0;max-height:320px;overflow:auto}
ol.messages li{margin:.3rem 0;padding:.4rem .6rem;border-radius:6px;background:#eef1f5}
ol.messages li[data-role=ASSISTANT]{background:#e6f4ea}
form.chat{display:flex;gap:.5rem}form.chat input{flex:1;padding:.4rem}
.error{color:#a50e0e}svg{max-width:100%;height:auto}
`;

export interface PageOptions {
  consoleError: boolean; // DATAHUB_FAULTS=console_error
}

export function layout(title: string, body: string, opts: PageOptions): string {
  // The fault makes the browser console show a real uncaught Error, as a
  // broken page script would.
  const fault = opts.consoleError
    ? `<script data-fault="console_error">throw new Error("DATAHUB_FAULTS=console_error: page script failed");</script>`
    : "";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · Data Hub</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
<script src="/static/app.js" defer></script>
${fault}
</head>
<body>
<header><a href="/data"><strong>Data Hub</strong></a></header>
<main>
${body}
</main>
</body>
</html>
`;
}

const STATUS_TEXT: Record<ConnectionStatus, string> = { CONNECTED: "Connected", NOT_CONNECTED: "Not Connected" };

export function statusText(status: ConnectionStatus): string {
  return STATUS_TEXT[status];
}

function statusBlock(p: ProviderInfo, status: ConnectionStatus): string {
  const connected = status === "CONNECTED";
  return `<p class="status" data-testid="connection-status" data-status="${status}">${statusText(status)}</p>
<button type="button" data-testid="connection-button" data-provider="${p.slug}" \
data-action="${connected ? "disconnect" : "connect"}">${connected ? "Disconnect" : "Connect"}</button>`;
}

const fmtInt = new Intl.NumberFormat("en-US");

function metricsList(t: Totals): string {
  const item = (key: keyof Totals, label: string, shown: string) =>
    `<div><dt>${label}</dt><dd data-testid="metric" data-metric="${key}" data-value="${esc(t[key])}">${esc(shown)}</dd></div>`;
  return `<dl>
${item("impressions", "Impressions", fmtInt.format(t.impressions))}
${item("clicks", "Clicks", fmtInt.format(t.clicks))}
${item("spend", "Spend", "$" + Number(t.spend).toLocaleString("en-US", { minimumFractionDigits: 2 }))}
${item("conversions", "Conversions", fmtInt.format(t.conversions))}
</dl>`;
}

function windowText(w: Window | null): string {
  return w ? `last ${WINDOW_DAYS} days (${isoDate(w.from)} to ${isoDate(w.to)})` : "no metrics yet";
}

export interface ChatLine {
  id: string;
  role: string;
  content: string;
}

export interface OverviewModel {
  workspaceName: string;
  window: Window | null;
  cards: { info: ProviderInfo; status: ConnectionStatus; totals: Totals }[];
  chat: ChatLine[];
}

function chatItem(m: ChatLine): string {
  return `<li data-testid="chat-message" data-role="${esc(m.role)}" data-id="${esc(m.id)}">${esc(m.content)}</li>`;
}

export function overviewPage(m: OverviewModel, opts: PageOptions): string {
  const cards = m.cards.map(({ info, status, totals }) => `<article class="card" data-testid="provider-card" \
data-provider="${info.slug}">
<h2><a href="/data/${info.slug}" data-testid="provider-link">${esc(info.name)}</a></h2>
${statusBlock(info, status)}
${metricsList(totals)}
</article>`);
  const body = `<h1>Data overview</h1>
<p data-testid="workspace">Workspace <strong>${esc(m.workspaceName)}</strong> · ${esc(windowText(m.window))}</p>
<section class="cards">
${cards.join("\n")}
</section>
<section class="panel" data-testid="master-chat">
<h2>Master Chat</h2>
<ol class="messages" data-testid="chat-messages">
${m.chat.map(chatItem).join("\n")}
</ol>
<form class="chat" data-testid="chat-form" action="/api/chat" method="post">
<input name="message" placeholder="Ask about your data, e.g. Show me my data" autocomplete="off" required maxlength="2000">
<button type="submit">Send</button>
</form>
<p class="error" data-testid="chat-error" hidden></p>
</section>`;
  return layout("Overview", body, opts);
}

// Daily impressions as an inline SVG line chart, one circle per day.
export function metricsChart(points: DailyPoint[]): string {
  const W = 640, H = 220, PAD = 30;
  if (points.length === 0) {
    return `<svg data-testid="metrics-chart" data-points="0" viewBox="0 0 ${W} ${H}" role="img" \
aria-label="No metrics"><text x="${W / 2}" y="${H / 2}" text-anchor="middle">No metrics in this period</text></svg>`;
  }
  const max = Math.max(1, ...points.map((p) => p.impressions));
  const step = points.length > 1 ? (W - 2 * PAD) / (points.length - 1) : 0;
  const xy = points.map((p, i) => [PAD + i * step, H - PAD - (p.impressions / max) * (H - 2 * PAD)]);
  const circles = points.map((p, i) => `<circle data-testid="chart-point" data-date="${p.date}" \
data-impressions="${p.impressions}" cx="${xy[i][0].toFixed(1)}" cy="${xy[i][1].toFixed(1)}" r="3" fill="#1a73e8">\
<title>${p.date}: ${fmtInt.format(p.impressions)} impressions, ${fmtInt.format(p.clicks)} clicks</title></circle>`);
  return `<svg data-testid="metrics-chart" data-points="${points.length}" viewBox="0 0 ${W} ${H}" role="img" \
aria-label="Daily impressions">
<line x1="${PAD}" y1="${H - PAD}" x2="${W - PAD}" y2="${H - PAD}" stroke="#9aa0a6"/>
<text x="${PAD}" y="${H - 8}" font-size="11">${points[0].date}</text>
<text x="${W - PAD}" y="${H - 8}" font-size="11" text-anchor="end">${points[points.length - 1].date}</text>
<text x="${PAD}" y="${PAD - 10}" font-size="11">max ${fmtInt.format(max)} impressions/day</text>
<polyline fill="none" stroke="#1a73e8" stroke-width="2" points="${xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ")}"/>
${circles.join("\n")}
</svg>`;
}

export interface DetailModel {
  info: ProviderInfo;
  workspaceName: string;
  window: Window | null;
  status: ConnectionStatus;
  totals: Totals;
  points: DailyPoint[];
  insights: { id: string; title: string; body: string; createdAt: Date }[];
}

export function detailPage(m: DetailModel, opts: PageOptions): string {
  const insights = m.insights.map((i) => `<li data-testid="insight" data-id="${esc(i.id)}"><strong>${esc(i.title)}\
</strong> <time datetime="${i.createdAt.toISOString()}">${isoDate(i.createdAt)}</time><p>${esc(i.body)}</p></li>`);
  const body = `<p><a href="/data">← All providers</a></p>
<h1 data-testid="provider-name">${esc(m.info.name)}</h1>
<article class="card" data-testid="provider-card" data-provider="${m.info.slug}">
<p>Workspace <strong>${esc(m.workspaceName)}</strong> · ${esc(windowText(m.window))}</p>
${statusBlock(m.info, m.status)}
${metricsList(m.totals)}
</article>
<section class="panel"><h2>Daily impressions</h2>
${metricsChart(m.points)}
</section>
<section class="panel"><h2>Insights</h2>
<ul data-testid="insights-list" data-count="${m.insights.length}">
${insights.join("\n")}
</ul>
${m.insights.length === 0 ? `<p data-testid="insights-empty">No insights for ${esc(m.info.name)} yet.</p>` : ""}
</section>`;
  return layout(m.info.name, body, opts);
}

export function messagePage(title: string, message: string, testid: string, opts: PageOptions): string {
  return layout(title, `<h1>${esc(title)}</h1><p data-testid="${esc(testid)}">${esc(message)}</p>
<p><a href="/data">Data overview</a></p>`, opts);
}

// Shown (with 401) to a browser without a session.
export function signInPage(opts: PageOptions): string {
  return layout("Sign in", `<h1>Sign in</h1>
<form class="chat" data-testid="sign-in" action="/api/session" method="post">
<input name="email" type="email" placeholder="you@example.com" required>
<button type="submit">Sign in</button>
</form>
<p class="error" data-testid="sign-in-error" hidden></p>`, opts);
}
