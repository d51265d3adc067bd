// Data Hub web app: entry point.
//
//   DATABASE_URL=postgresql://... [PORT=3000] [HOST=127.0.0.1] [APP_LOG=logs/app.log]
//   [DATAHUB_FAULTS=flag,...] npm start
//
// Prints `listening on http://HOST:PORT` when ready (PORT=0 picks a free
// port and prints it).  SIGTERM/SIGINT: stop accepting, finish the requests
// in flight, disconnect from the database, exit 0.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { App } from "./app.ts";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { createDb, describeError } from "./db.ts";
import { Logger } from "./log.ts";

// This file runs as dist/src/server.js; the app's root is two levels up.
const APP_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SHUTDOWN_TIMEOUT_MS = 10_000;

async function main(config: Config): Promise<void> {
  const log = new Logger(config.logPath);
  const db = createDb(config.databaseUrl);
  const clientScript = readFileSync(`${APP_ROOT}public/app.js`);
  const app = new App({ db, log, faults: config.faults, clientScript });
  const server = createServer((req, res) => void app.handle(req, res));

  process.on("unhandledRejection", (err) => log.error(`unhandled rejection: ${describeError(err)}`));


  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: shutting down (no new connections, finishing requests in flight)`);
    app.closing = true;
    const timer = setTimeout(() => {
      log.warn(`shutdown: requests still open after ${SHUTDOWN_TIMEOUT_MS} ms, closing their connections`);
      server.closeAllConnections();
    }, SHUTDOWN_TIMEOUT_MS);
    timer.unref();
    // close() stops listening and calls back once every connection is gone;
    // idle keep-alive connections are closed now, busy ones after their
    // response (which carries Connection: close).
    server.close(() => {
      db.$disconnect()
        .catch((err: unknown) => log.error(`shutdown: disconnecting from the database: ${describeError(err)}`))
        .finally(() => {
          log.info("stopped");
          log.close();
          process.exit(0);
        });
    });
    server.closeIdleConnections();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));

  server.on("error", (err) => {
    log.error(`server: ${describeError(err)}`);
    process.exit(1);
  });
  server.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo;
    log.info(`listening on http://${config.host}:${port} (log ${config.logPath})`);
    console.log(`listening on http://${config.host}:${port}`);
  });
}

let config: Config;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`datahub: ${err.message}`);
  process.exit(2);
}
main(config).catch((err: unknown) => {
  console.error(`datahub: ${describeError(err)}`);
  process.exit(1);
});
