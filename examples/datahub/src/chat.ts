// Master Chat: the assistant answers with a summary computed from the
// workspace's own data.  The user's message and the reply are written in one
// transaction, both carrying the session's workspaceId.
import { randomBytes } from "node:crypto";
import type { Db } from "./db.ts";
import type { Faults } from "./config.ts";
import { PROVIDERS } from "./providers.ts";
import { connectionStatuses, isoDate, metricWindow, workspaceTotals } from "./queries.ts";
import type { Session } from "./session.ts";

export interface StoredMessage {
  id: string;
  role: "USER" | "ASSISTANT";
  content: string;
  workspaceId: string | null;
}

const fmtInt = new Intl.NumberFormat("en-US");

export async function summarize(db: Db, s: Session): Promise<string> {
  const [statuses, window] = await Promise.all([
    connectionStatuses(db, s.workspaceId, s.userId),
    metricWindow(db, s.workspaceId),
  ]);
  const connected = PROVIDERS.filter((p) => statuses.get(p.provider) === "CONNECTED").map((p) => p.name);
  const sources = connected.length > 0
    ? `Connected sources (${connected.length} of 6): ${connected.join(", ")}.`
    : "No sources are connected yet.";
  if (!window) return `${sources} There are no metrics in ${s.workspaceName} yet.`;
  const t = await workspaceTotals(db, s.workspaceId, window);
  return `${sources} Last 30 days in ${s.workspaceName} (${isoDate(window.from)} to ${isoDate(window.to)}): `
    + `${fmtInt.format(t.impressions)} impressions, ${fmtInt.format(t.clicks)} clicks, `
    + `$${Number(t.spend).toLocaleString("en-US", { minimumFractionDigits: 2 })} spend, `
    + `${fmtInt.format(t.conversions)} conversions.`;
}

// A cuid-like id for rows written with raw SQL (Prisma fills @default(cuid())
// only for its own create calls).
function newId(): string {
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  return "c" + Array.from(randomBytes(24), (b) => alphabet[b % 36]).join("");
}

export async function storeChat(
  db: Db,
  s: Session,
  message: string,
  faults: Faults,
): Promise<{ reply: string | null; messages: StoredMessage[] }> {
  const reply = faults.noChatReply ? null : await summarize(db, s);
  const drafts: { role: "USER" | "ASSISTANT"; content: string; createdAt: Date }[] = [];
  const now = Date.now();
  // The reply is 1 ms younger, so the history's order is stable.
  drafts.push({ role: "USER", content: message, createdAt: new Date(now) });
  if (reply !== null) drafts.push({ role: "ASSISTANT", content: reply, createdAt: new Date(now + 1) });

  if (faults.chatNullWorkspace) {
    // The bug the tenancy release guards against: an app writing rows without
    // a workspace.  Raw SQL, because the generated client refuses a NULL for a
    // required field before anything reaches the database; here PostgreSQL
    // decides (NOT NULL column: error 23502; nullable: a real NULL row).
    const rows = drafts.map((d) => ({ id: newId(), ...d }));
    await db.$transaction(rows.map((r) => db.$executeRaw`
      INSERT INTO "ChatMessage" (id, "userId", role, content, "createdAt", "workspaceId")
      VALUES (${r.id}, ${s.userId}, ${r.role}::"ChatRole", ${r.content}, ${r.createdAt}, NULL)`));
    return { reply, messages: rows.map((r) => ({ id: r.id, role: r.role, content: r.content, workspaceId: null })) };
  }

  const select = { id: true, role: true, content: true, workspaceId: true } as const;
  const messages = await db.$transaction(drafts.map((d) => db.chatMessage.create({
    data: { userId: s.userId, workspaceId: s.workspaceId, ...d },
    select,
  })));
  return { reply, messages };
}
