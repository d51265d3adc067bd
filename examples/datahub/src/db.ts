// The Prisma client (Prisma 7 with the node-postgres driver adapter) and a
// one-line description of database errors for the log.
import { PrismaPg } from "@prisma/adapter-pg";
import { Prisma, PrismaClient } from "../generated/prisma/client.ts";

export type Db = PrismaClient;

export function createDb(databaseUrl: string): Db {
  // A connect attempt to an unreachable host fails after 5 s instead of
  // hanging the request (node-postgres waits forever by default), so
  // /health can answer 503.
  const adapter = new PrismaPg({ connectionString: databaseUrl, connectionTimeoutMillis: 5000 });
  return new PrismaClient({ adapter });
}

// `Name [code]: message (detail)` with everything needed to diagnose a
// failure from the log alone: Prisma's error code (P2011, P2003, ...) and the
// driver's PostgreSQL SQLSTATE and message (23502 not_null_violation, ...).
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return `non-Error thrown: ${String(err)}`;
  const parts = [err.name];
  if (err instanceof Prisma.PrismaClientKnownRequestError) {
    parts[0] += ` ${err.code}`;
  }
  let text = `${parts.join(" ")}: ${err.message.trim()}`;
  const meta = (err as { meta?: unknown }).meta;
  if (meta !== undefined) text += ` meta=${safeJson(meta)}`;
  const cause = (err as { cause?: unknown }).cause;
  if (cause !== undefined) text += ` cause=${cause instanceof Error ? cause.message : safeJson(cause)}`;
  const pgCode = (err as { code?: unknown }).code;
  if (!(err instanceof Prisma.PrismaClientKnownRequestError) && typeof pgCode === "string") text += ` code=${pgCode}`;
  return text;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
