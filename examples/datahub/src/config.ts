// Settings from the environment, read once at startup.  A bad value stops
// the app before it listens (exit 2), so a typo in DATAHUB_FAULTS cannot
// silently turn a fault test into a passing run.
import { providerBySlug } from "./providers.ts";

export class ConfigError extends Error {}

// DATAHUB_FAULTS (comma-separated): failures that tests switch on, so that
// each failure the smoke test looks for can be produced for real.
export interface Faults {
  overview500: boolean; // GET /data throws -> 500 and an ERROR log line
  missingCards: ReadonlySet<string>; // provider slugs whose card is not rendered
  noChatReply: boolean; // chat stores the user message only, reply null
  chatNullWorkspace: boolean; // chat messages written with workspaceId NULL
  logConstraintViolation: boolean; // each /data render logs a real constraint violation
  consoleError: boolean; // the page script throws in the browser
}

export interface Config {
  databaseUrl: string;
  host: string;
  port: number; // 0: any free port (the real one is printed)
  logPath: string;
  faults: Faults;
}

export function parseFaults(value: string | undefined): Faults {
  const faults: Faults = {
    overview500: false,
    missingCards: new Set<string>(),
    noChatReply: false,
    chatNullWorkspace: false,
    logConstraintViolation: false,
    consoleError: false,
  };
  const missing = new Set<string>();
  for (const raw of (value ?? "").split(",")) {
    const flag = raw.trim();
    if (flag === "") continue;
    if (flag.startsWith("missing_card:")) {
      const slug = flag.slice("missing_card:".length);
      if (!providerBySlug(slug)) throw new ConfigError(`DATAHUB_FAULTS: unknown provider slug in '${flag}'`);
      missing.add(slug);
      continue;
    }
    switch (flag) {
      case "overview_500": faults.overview500 = true; break;
      case "no_chat_reply": faults.noChatReply = true; break;
      case "chat_null_workspace": faults.chatNullWorkspace = true; break;
      case "log_constraint_violation": faults.logConstraintViolation = true; break;
      case "console_error": faults.consoleError = true; break;
      default: throw new ConfigError(`DATAHUB_FAULTS: unknown fault '${flag}'`);
    }
  }
  faults.missingCards = missing;
  return faults;
}

export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const databaseUrl = env.DATABASE_URL;
  if (!databaseUrl) throw new ConfigError("DATABASE_URL is not set (postgresql://USER@HOST:PORT/DB)");
  const portText = env.PORT ?? "3000";
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) throw new ConfigError(`PORT must be 0..65535, got '${portText}'`);
  return {
    databaseUrl,
    host: env.HOST || "127.0.0.1",
    port,
    logPath: env.APP_LOG || "logs/app.log",
    faults: parseFaults(env.DATAHUB_FAULTS),
  };
}
