// Loaded with `node --require` (NODE_OPTIONS) by tests/helpers/prisma6.lua.
// After deploy/resolve, the schema engine leaves its 10 s advisory-lock
// timeout armed; a referenced timer keeps Node alive until it fires, so every
// command would linger 10 s.  Long timers are unref'd: they still fire while
// anything else (a query, the lock wait) keeps the process running.
"use strict";
const setTimeout_ = globalThis.setTimeout;
globalThis.setTimeout = function (fn, ms, ...args) {
  const t = setTimeout_(fn, ms, ...args);
  if (typeof ms === "number" && ms >= 1000 && t && typeof t.unref === "function") t.unref();
  return t;
};
