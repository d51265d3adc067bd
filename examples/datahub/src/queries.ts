// Read models for the pages and the chat.  Every function takes the
// session's workspaceId and filters by it: a user never sees another
// workspace's rows.
//
// "Last 30 days" is the 30 days ending on the workspace's latest day with
// metrics, not on today: provider data arrives with a delay, and the example's
// seed data is fixed in time (it ends 2025-12-01), so a window ending today
// would show zeros.
import type { ConnectionStatus, Provider } from "../generated/prisma/client.ts";
import type { Db } from "./db.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
export const WINDOW_DAYS = 30;

export interface Window {
  from: Date; // inclusive, UTC midnight
  to: Date; // inclusive
}

export interface Totals {
  impressions: number;
  clicks: number;
  spend: string; // 2 decimals, exact (NUMERIC(12,2) summed by PostgreSQL)
  conversions: number;
}

export interface DailyPoint extends Totals {
  date: string; // YYYY-MM-DD
}

export const ZERO_TOTALS: Totals = { impressions: 0, clicks: 0, spend: "0.00", conversions: 0 };

export function isoDate(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export async function metricWindow(db: Db, workspaceId: string): Promise<Window | null> {
  const agg = await db.metricDaily.aggregate({ where: { workspaceId }, _max: { date: true } });
  const to = agg._max.date;
  if (!to) return null;
  return { from: new Date(to.getTime() - (WINDOW_DAYS - 1) * DAY_MS), to };
}

interface SumRow {
  _sum: {
    impressions: number | null;
    clicks: number | null;
    spend: { toFixed(dp: number): string } | null;
    conversions: number | null;
  };
}

function totalsOf(row: SumRow): Totals {
  return {
    impressions: row._sum.impressions ?? 0,
    clicks: row._sum.clicks ?? 0,
    spend: row._sum.spend ? row._sum.spend.toFixed(2) : "0.00",
    conversions: row._sum.conversions ?? 0,
  };
}

const SUMS = { impressions: true, clicks: true, spend: true, conversions: true } as const;

// Totals per provider over the window; providers without rows are absent.
export async function totalsByProvider(db: Db, workspaceId: string, w: Window): Promise<Map<Provider, Totals>> {
  const rows = await db.metricDaily.groupBy({
    by: ["provider"],
    where: { workspaceId, date: { gte: w.from, lte: w.to } },
    _sum: SUMS,
  });
  return new Map(rows.map((r) => [r.provider, totalsOf(r)]));
}

// All providers together over the window.
export async function workspaceTotals(db: Db, workspaceId: string, w: Window): Promise<Totals> {
  const agg = await db.metricDaily.aggregate({
    where: { workspaceId, date: { gte: w.from, lte: w.to } },
    _sum: SUMS,
  });
  return totalsOf(agg);
}

// One point per day with data, oldest first.
export async function dailySeries(db: Db, workspaceId: string, provider: Provider, w: Window): Promise<DailyPoint[]> {
  const rows = await db.metricDaily.groupBy({
    by: ["date"],
    where: { workspaceId, provider, date: { gte: w.from, lte: w.to } },
    _sum: SUMS,
    orderBy: { date: "asc" },
  });
  return rows.map((r) => ({ date: isoDate(r.date), ...totalsOf(r) }));
}

// The session user's connection status per provider, in this workspace.
export async function connectionStatuses(
  db: Db,
  workspaceId: string,
  userId: string,
): Promise<Map<Provider, ConnectionStatus>> {
  const rows = await db.connection.findMany({
    where: { workspaceId, userId },
    select: { provider: true, status: true },
  });
  return new Map(rows.map((r) => [r.provider, r.status]));
}

export async function insightsFor(db: Db, workspaceId: string, provider: Provider) {
  return db.insight.findMany({
    where: { workspaceId, provider },
    orderBy: [{ createdAt: "desc" }, { id: "asc" }],
    take: 50,
    select: { id: true, title: true, body: true, createdAt: true },
  });
}

// The user's latest chat messages in this workspace, oldest first.
export async function chatHistory(db: Db, workspaceId: string, userId: string, take = 20) {
  const rows = await db.chatMessage.findMany({
    where: { workspaceId, userId },
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take,
    select: { id: true, role: true, content: true, createdAt: true },
  });
  return rows.reverse();
}
