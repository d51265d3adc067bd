// The application log: one line per record, appended with a synchronous
// write per line, so a line is in the file the moment it is logged (the
// release's smoke test reads the log while the app is still running, and a
// crash loses nothing).
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname } from "node:path";

export type Level = "INFO" | "WARN" | "ERROR";

export class Logger {
  private fd: number | null;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, "a");
  }

  info(message: string): void { this.write("INFO", message); }
  warn(message: string): void { this.write("WARN", message); }
  error(message: string): void { this.write("ERROR", message); }

  // `<ISO time> LEVEL message`; newlines inside the message become " | " so
  // that every record stays one greppable line.
  write(level: Level, message: string): void {
    const line = `${new Date().toISOString()} ${level} ${message.replace(/\s*\r?\n\s*/g, " | ")}\n`;
    if (level === "ERROR") process.stderr.write(line);
    if (this.fd !== null) writeSync(this.fd, line);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
