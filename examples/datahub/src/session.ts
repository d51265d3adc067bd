// Who is asking, and in which workspace.
//
// This is an example app, not an authentication system: the session cookie
// holds the user's id as is.  Scripts may send `X-Datahub-User: <email>`, and
// a page URL may carry `?session=<email>`.
// The workspace is derived from the database on every request, never taken
// from the client, and every query below is scoped by it.
import type { IncomingMessage } from "node:http";
import type { Db } from "./db.ts";

export const SESSION_COOKIE = "dh_session";

export interface Session {
  userId: string;
  email: string;
  workspaceId: string;
  workspaceName: string;
}

export type SessionResult =
  | { kind: "ok"; session: Session }
  | { kind: "anonymous" } // no cookie/header, or an unknown user
  | { kind: "no_workspace"; userId: string };

export function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

// The session's workspace: the workspace the user OWNS (the oldest such
// membership, the same rule the workspaceId backfill uses), else the user's
// oldest membership of any role.
export async function resolveWorkspace(
  db: Db,
  userId: string,
): Promise<{ id: string; name: string } | null> {
  const memberships = await db.workspaceMember.findMany({
    where: { userId },
    orderBy: [{ createdAt: "asc" }, { id: "asc" }],
    select: { role: true, workspace: { select: { id: true, name: true } } },
  });
  const chosen = memberships.find((m) => m.role === "OWNER") ?? memberships[0];
  return chosen ? chosen.workspace : null;
}

// Who is asking: `?session=<email>` on a page (GET) signs that user in (a
// headless browser, e.g. the smoke test's console check, can only be given a
// URL); else the session cookie; else the X-Datahub-User header.
// `signedIn` is true when the query parameter was used: the caller then sets
// the cookie, so the page's own fetch() calls carry the session.
export async function resolveSession(
  db: Db,
  req: IncomingMessage,
  queryEmail: string | null,
): Promise<SessionResult & { signedIn?: boolean }> {
  const userId = readCookie(req, SESSION_COOKIE);
  const headerEmail = req.headers["x-datahub-user"];
  const select = { id: true, email: true } as const;
  let user: { id: string; email: string } | null = null;
  if (queryEmail) {
    user = await db.user.findUnique({ where: { email: queryEmail }, select });
  } else if (userId) {
    user = await db.user.findUnique({ where: { id: userId }, select });
  } else if (typeof headerEmail === "string" && headerEmail !== "") {
    user = await db.user.findUnique({ where: { email: headerEmail }, select });
  }
  if (!user) return { kind: "anonymous" };
  const workspace = await resolveWorkspace(db, user.id);
  if (!workspace) return { kind: "no_workspace", userId: user.id };
  return {
    kind: "ok",
    signedIn: Boolean(queryEmail),
    session: { userId: user.id, email: user.email, workspaceId: workspace.id, workspaceName: workspace.name },
  };
}

export function sessionCookie(userId: string): string {
  return `${SESSION_COOKIE}=${encodeURIComponent(userId)}; Path=/; HttpOnly; SameSite=Lax`;
}
