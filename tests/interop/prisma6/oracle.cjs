// The driver adapter through which the Prisma 6.19 CLI runs Migrate in
// tests/interop_spec.lua.  Its WASM schema engine needs an adapter, because the
// native schema-engine binary cannot be downloaded here.  A throwaway
// project's prisma.config.ts calls adapter(process.env.DATABASE_URL).
//
// Four workarounds make the adapter's connection behave like the native
// engine's own:
//  1. adapter-pg cannot decode `name` (oid 19) and `"char"` (oid 18)
//     columns, which the engine's schema describer reads (prisma/orm#27403).
//     Such fields are reported as text (25).
//  2. The pool has one connection (max: 1), so the advisory lock and the
//     migration scripts share one session, as with the native engine.
//  3. adapter-pg's executeScript splits a script on ';', which breaks
//     `DO $$ ... $$` blocks.  Here the whole script goes as one simple query,
//     as the native engine sends it.
//  4. `migrate dev` replays migrations on a shadow database.  adapter-pg's
//     shadow pool would connect with the main URL, because the connection
//     string wins over the database name.  Here it connects to the new
//     database, and is closed before that database is dropped.
// allowExitOnIdle lets the CLI exit as soon as it is done: an idle pooled
// connection would otherwise keep Node running until the pool's 10 s idle
// timeout.
"use strict";
const crypto = require("node:crypto");
const pg = require("pg");
const Result = require("pg/lib/result");
const { PrismaPg } = require("@prisma/adapter-pg");

const NAME = 19, CHAR = 18, TEXT = 25;
const addFields = Result.prototype.addFields;
Result.prototype.addFields = function (fields) {
  for (const f of fields) {
    if (f.dataTypeID === NAME || f.dataTypeID === CHAR) f.dataTypeID = TEXT;
  }
  return addFields.call(this, fields);
};

async function admin(url, sql) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function adapter(url, options) {
  const pool = new pg.Pool({ connectionString: url, max: 1, allowExitOnIdle: true });
  const factory = new PrismaPg(pool, options);
  const connect = factory.connect.bind(factory);
  factory.connect = async () => {
    const conn = await connect();
    conn.executeScript = async (script) => {
      try {
        await conn.client.query(script);
      } catch (error) {
        conn.onError(error);
      }
    };
    return conn;
  };
  factory.connectToShadowDb = async () => {
    const name = `prisma_migrate_shadow_db_${crypto.randomUUID()}`;
    await admin(url, `CREATE DATABASE "${name}"`);
    const shadowUrl = new URL(url);
    shadowUrl.pathname = "/" + name;
    const conn = await adapter(shadowUrl.toString(), { disposeExternalPool: true }).connect();
    const dispose = conn.dispose.bind(conn);
    conn.dispose = async () => {
      await dispose();
      await admin(url, `DROP DATABASE IF EXISTS "${name}"`);
    };
    return conn;
  };
  return factory;
}

exports.adapter = adapter;
