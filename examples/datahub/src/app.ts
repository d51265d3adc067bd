// Request handling: routing, sessions, JSON/HTML responses, the access log
// and error logging.  No framework: node:http and a small route table.
import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { storeChat } from "./chat.ts";
import type { Faults } from "./config.ts";
import { describeError, type Db } from "./db.ts";
import { detailPage, messagePage, overviewPage, signInPage, statusText, type PageOptions } from "./html.ts";
import type { Logger } from "./log.ts";
import { PROVIDERS, providerBySlug } from "./providers.ts";
import {
  chatHistory, connectionStatuses, dailySeries, insightsFor, metricWindow, totalsByProvider, ZERO_TOTALS,
} from "./queries.ts";
import { resolveSession, resolveWorkspace, sessionCookie, type Session } from "./session.ts";

const MAX_BODY = 64 * 1024;
const MAX_MESSAGE = 2000;
const NO_WORKSPACE = "user has no workspace yet (run the backfill)";

// An expected failure with a status and a message safe to show the client.
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

type Kind = "json" | "html";

interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  params: string[];
  session: Session; // only for routes with auth (empty otherwise)
}

interface Route {
  method: string;
  pattern: RegExp;
  kind: Kind; // how errors are answered
  auth: boolean;
  handle: (ctx: Context) => Promise<void>;
}

export interface AppOptions {
  db: Db;
  log: Logger;
  faults: Faults;
  clientScript: Buffer; // public/app.js
}

export class App {
  private readonly routes: Route[];
  private readonly page: PageOptions;
  // Set on SIGTERM: answers carry `Connection: close`, so keep-alive clients
  // let go and the server can finish.
  closing = false;

  constructor(private readonly opts: AppOptions) {
    this.page = { consoleError: opts.faults.consoleError };
    const r = (method: string, pattern: RegExp, kind: Kind, auth: boolean, handle: Route["handle"]): Route =>
      ({ method, pattern, kind, auth, handle });
    this.routes = [
      r("GET", /^\/health$/, "json", false, (c) => this.health(c)),
      r("GET", /^\/static\/app\.js$/, "json", false, (c) => this.clientScript(c)),
      r("POST", /^\/api\/session$/, "json", false, (c) => this.signIn(c)),
      r("GET", /^\/$/, "html", false, async (c) => redirect(c.res, "/data")),
      r("GET", /^\/data\/?$/, "html", true, (c) => this.overview(c)),
      r("GET", /^\/data\/([^/]+)$/, "html", true, (c) => this.detail(c)),
      r("POST", /^\/api\/chat$/, "json", true, (c) => this.chat(c)),
      r("POST", /^\/api\/connections\/([^/]+)\/(connect|disconnect)$/, "json", true, (c) => this.connection(c)),
    ];
  }

  // The node:http request listener.  Never rejects: every failure becomes a
  // response and, when unexpected, an ERROR line.
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const url = new URL(req.url ?? "/", "http://localhost");
    const method = req.method ?? "GET";
    res.once("close", () => {
      const ms = Math.round(performance.now() - started);
      const aborted = res.writableFinished ? "" : " (client went away)";
      this.opts.log.info(`${method} ${url.pathname} ${res.statusCode} ${ms}ms${aborted}`);
    });
    if (this.closing) res.setHeader("Connection", "close");

    const matching = this.routes.filter((rt) => rt.pattern.test(url.pathname));
    const route = matching.find((rt) => rt.method === method);
    const kind: Kind = route?.kind ?? (url.pathname.startsWith("/api/") ? "json" : "html");
    try {
      if (!route) {
        if (matching.length > 0) {
          res.setHeader("Allow", matching.map((rt) => rt.method).join(", "));
          throw new HttpError(405, `${method} is not allowed here`);
        }
        throw new HttpError(404, `no such page: ${url.pathname}`);
      }
      const params = (route.pattern.exec(url.pathname) ?? []).slice(1).map(decodePart);
      // session is filled in for routes with auth; the others never read it.
      const ctx: Context = { req, res, params, session: undefined as unknown as Session };
      if (route.auth) {
        const pageSignIn = method === "GET" && route.kind === "html" ? url.searchParams.get("session") : null;
        ctx.session = await this.requireSession(req, res, pageSignIn);
      }
      await route.handle(ctx);
    } catch (err) {
      this.fail(res, kind, method, url.pathname, err);
    }
  }

  private fail(res: ServerResponse, kind: Kind, method: string, path: string, err: unknown): void {
    let status = 500;
    let message = "internal error (see the application log)";
    if (err instanceof HttpError) {
      status = err.status;
      message = err.message;
    } else {
      this.opts.log.error(`${method} ${path} failed: ${describeError(err)}`);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (kind === "json") {
      sendJson(res, status, { error: message });
    } else if (status === 401) {
      sendHtml(res, status, signInPage(this.page));
    } else {
      const title = status === 404 ? "Not found" : status >= 500 ? "Something went wrong" : "Request failed";
      sendHtml(res, status, messagePage(title, message, status === 404 ? "not-found" : "error", this.page));
    }
  }

  private async requireSession(req: IncomingMessage, res: ServerResponse, pageSignIn: string | null): Promise<Session> {
    const result = await resolveSession(this.opts.db, req, pageSignIn);
    if (result.kind === "anonymous") {
      throw new HttpError(401, "not signed in: POST /api/session {\"email\": ...}, send X-Datahub-User: EMAIL, "
        + "or open a page with ?session=EMAIL");
    }
    if (result.kind === "no_workspace") throw new HttpError(409, NO_WORKSPACE);
    if (result.signedIn) res.setHeader("Set-Cookie", sessionCookie(result.session.userId));
    return result.session;
  }

  // GET /health: 200 after a round trip to the database, else 503.
  private async health({ res }: Context): Promise<void> {
    try {
      await this.opts.db.$queryRaw`SELECT 1`;
    } catch (err) {
      this.opts.log.error(`GET /health: database check failed: ${describeError(err)}`);
      sendJson(res, 503, { status: "error" });
      return;
    }
    sendJson(res, 200, { status: "ok", db: "ok" });
  }

  private async clientScript({ res }: Context): Promise<void> {
    res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache" });
    res.end(this.opts.clientScript);
  }

  // POST /api/session {"email"}: sets the session cookie.
  private async signIn({ req, res }: Context): Promise<void> {
    const body = await readJson(req);
    const email = body.email;
    if (typeof email !== "string" || email.trim() === "") throw new HttpError(400, "email (a string) is required");
    const user = await this.opts.db.user.findUnique({ where: { email: email.trim() }, select: { id: true } });
    if (!user) throw new HttpError(404, "unknown email");
    const workspace = await resolveWorkspace(this.opts.db, user.id);
    if (!workspace) throw new HttpError(409, NO_WORKSPACE);
    res.setHeader("Set-Cookie", sessionCookie(user.id));
    sendJson(res, 200, { userId: user.id, workspaceId: workspace.id });
  }

  // DATAHUB_FAULTS=log_constraint_violation: each /data render also makes a
  // write the database rejects for real, logged the way a failed background
  // write would be.  The row points at a workspace that does not exist, so
  // PostgreSQL refuses it with the ChatMessage_workspaceId_fkey foreign key
  // (Prisma P2003, SQLSTATE 23503).  The page itself still renders.
  private async failingWrite(s: Session): Promise<void> {
    try {
      await this.opts.db.chatMessage.create({
        data: {
          userId: s.userId,
          workspaceId: "no-such-workspace",
          role: "USER",
          content: "DATAHUB_FAULTS=log_constraint_violation",
        },
      });
      this.opts.log.warn("DATAHUB_FAULTS=log_constraint_violation: the insert unexpectedly succeeded");
    } catch (err) {
      this.opts.log.error(`GET /data: recording the page view failed: ${describeError(err)}`);
    }
  }

  // GET /data: one card per provider with status and 30-day metrics, and the chat.
  private async overview({ res, session: s }: Context): Promise<void> {
    const { db, faults } = this.opts;
    if (faults.overview500) throw new Error("DATAHUB_FAULTS=overview_500: simulated failure rendering /data");
    if (faults.logConstraintViolation) await this.failingWrite(s);
    const [window, statuses, chat] = await Promise.all([
      metricWindow(db, s.workspaceId),
      connectionStatuses(db, s.workspaceId, s.userId),
      chatHistory(db, s.workspaceId, s.userId),
    ]);
    const totals = window ? await totalsByProvider(db, s.workspaceId, window) : new Map();
    const cards = PROVIDERS.filter((p) => !faults.missingCards.has(p.slug)).map((info) => ({
      info,
      status: statuses.get(info.provider) ?? "NOT_CONNECTED",
      totals: totals.get(info.provider) ?? ZERO_TOTALS,
    }));
    sendHtml(res, 200, overviewPage({ workspaceName: s.workspaceName, window, cards, chat }, this.page));
  }

  // GET /data/<slug>: chart and insights of one provider.
  private async detail({ res, params, session: s }: Context): Promise<void> {
    const info = providerBySlug(params[0]);
    if (!info) throw new HttpError(404, `no such provider: ${params[0]}`);
    const { db } = this.opts;
    const [window, statuses, insights] = await Promise.all([
      metricWindow(db, s.workspaceId),
      connectionStatuses(db, s.workspaceId, s.userId),
      insightsFor(db, s.workspaceId, info.provider),
    ]);
    const [totals, points] = window
      ? await Promise.all([
        totalsByProvider(db, s.workspaceId, window),
        dailySeries(db, s.workspaceId, info.provider, window),
      ])
      : [new Map(), []];
    sendHtml(res, 200, detailPage({
      info,
      workspaceName: s.workspaceName,
      window,
      status: statuses.get(info.provider) ?? "NOT_CONNECTED",
      totals: totals.get(info.provider) ?? ZERO_TOTALS,
      points,
      insights,
    }, this.page));
  }

  // POST /api/chat {"message"}: stores the message and the assistant's reply.
  private async chat({ req, res, session }: Context): Promise<void> {
    const body = await readJson(req);
    const message = typeof body.message === "string" ? body.message.trim() : "";
    if (message === "") throw new HttpError(400, "message (a non-empty string) is required");
    if (message.length > MAX_MESSAGE) throw new HttpError(400, `message is longer than ${MAX_MESSAGE} characters`);
    sendJson(res, 200, await storeChat(this.opts.db, session, message, this.opts.faults));
  }

  // POST /api/connections/<slug>/connect|disconnect: the user's connection to
  // that provider in the session's workspace.
  private async connection({ res, params, session: s }: Context): Promise<void> {
    const [slug, action] = params;
    const info = providerBySlug(slug);
    if (!info) throw new HttpError(404, `no such provider: ${slug}`);
    const status = action === "connect" ? "CONNECTED" : "NOT_CONNECTED";
    const { db } = this.opts;
    // Scoped by workspace: a connection of this user that lives in another
    // workspace is never touched from this one.
    const updated = await db.connection.updateMany({
      where: { userId: s.userId, provider: info.provider, workspaceId: s.workspaceId },
      data: { status },
    });
    if (updated.count === 0) {
      const elsewhere = await db.connection.findUnique({
        where: { userId_provider: { userId: s.userId, provider: info.provider } },
        select: { id: true },
      });
      if (elsewhere) throw new HttpError(409, `your ${info.name} connection belongs to another workspace`);
      if (status === "CONNECTED") {
        await db.connection.create({
          data: { userId: s.userId, provider: info.provider, status, workspaceId: s.workspaceId },
        });
      }
    }
    sendJson(res, 200, { provider: info.slug, status: statusText(status) });
  }
}

function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, "malformed URL");
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" });
  res.end(body);
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
  res.end(html);
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(302, { Location: location });
  res.end();
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  if (!/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
    throw new HttpError(415, "send a JSON body with Content-Type: application/json");
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, `request body is larger than ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}
