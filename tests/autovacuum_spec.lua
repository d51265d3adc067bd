-- NOT NULL enforcement against autovacuum, and a rollout left NOT NULL on
-- some of its tables only: the example Data Hub, its flows run as a user
-- runs them, as a role that is not a superuser (as production runs).
local dh = require "datahub"
local testdb = require "testdb"
local prisma = require "dhrun.prisma"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"
local sh = require "sh"

-- Polls fn until it returns a true value or `secs` pass; returns the value.
local function eventually(secs, fn)
  local deadline = sys.now() + secs
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.1)
  until sys.now() > deadline
  return nil
end

-- The server's autovacuum_naptime: 1 s while `on`, else its default again.
local function naptime(on)
  local admin <close> = testdb.admin()
  admin:exec(on and "ALTER SYSTEM SET autovacuum_naptime = '1s'" or "ALTER SYSTEM RESET autovacuum_naptime")
  admin:query("SELECT pg_reload_conf()")
end

describe("NOT NULL enforcement", function()
  it("finishes on 1M rows while a slow autovacuum holds the table, as a non-superuser, naming it", function()
    local t = testdb.create()
    local role
    finally(function()
      naptime(false)
      if t.conn then t.conn:close() end
      testdb.drop(t.name) -- WITH (FORCE): ends the autovacuum worker too
      if role then testdb.drop_role(role) end
    end)
    local conn = t.connect()
    t.conn = conn
    prisma.deploy(conn, dh.migrations, { until_name = dh.INIT })
    dh.seed(conn, 60, 1000000)
    prisma.deploy(conn, dh.migrations, { until_name = dh.NULLABLE })
    local url
    role, url = testdb.owner_role(t.name)
    assert.is_false(conn:query_value("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role))

    -- An autovacuum that starts on MetricDaily as soon as it has a dead row,
    -- and then crawls (100 ms of sleep for every page or so): it would hold
    -- the table for far longer than this test runs.
    conn:exec([[ALTER TABLE "MetricDaily" SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
      autovacuum_analyze_threshold = 0, autovacuum_analyze_scale_factor = 0,
      autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)]])
    -- The backfill was done earlier, without VACUUM (as in issue 11): one
    -- UPDATE per table by the rollout's rule, its prepare first; the small
    -- ChatMessage is left for deploy's own backfill.
    local cfg = dofile(dh.example .. "/dhrun.config.lua")
    conn:exec_script(cfg.rollouts[1].prepare)
    -- The values are the parents' own, so the foreign-key checks cannot fail:
    -- skipped, as the seed skips them, for speed.
    conn:exec("SET session_replication_role = replica")
    conn:exec([[UPDATE "Connection" t SET "workspaceId" = o."workspaceId" FROM datahub_owner_ws o
      WHERE o."userId" = t."userId"]])
    -- MetricDaily's million rows in two halves at once, one in a dhrun
    -- process of its own (the two cores halve the time).
    local metric = [[SET session_replication_role = replica;
      UPDATE "MetricDaily" t SET "workspaceId" = c."workspaceId" FROM "Connection" c
       WHERE c.id = t."connectionId" AND t.id %s 500000]]
    local dir = sh.tmpdir()
    local half = process.spawn({ sh.bin, "-e", string.format(
      "require('dhrun.db').connect(os.getenv('AV_DB')):exec_script(%q)", metric:format("<=")) },
      { env = { AV_DB = t.conninfo }, stderr = dir .. "/half.err" })
    conn:exec_script(metric:format(">"))
    local done = assert(half:wait(120))
    assert.are.equal(0, done.code, sh.read(dir .. "/half.err"))
    conn:exec([[UPDATE "Insight" t SET "workspaceId" = coalesce(
      (SELECT c."workspaceId" FROM "Connection" c WHERE c.id = t."connectionId"),
      (SELECT o."workspaceId" FROM datahub_owner_ws o WHERE o."userId" = t."userId"))]])
    conn:exec("RESET session_replication_role")
    local counts = dh.counts(conn)
    naptime(true)
    local worker = eventually(30, function()
      return conn:query_value([[SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.relation = '"MetricDaily"'::regclass AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted
          AND a.backend_type = 'autovacuum worker' LIMIT 1]])
    end)
    assert.is_truthy(worker, "autovacuum did not start on MetricDaily within 30 s")

    local t0 = sys.now()
    local r = dh.flow(t, "deploy", { "--no-build" }, { env = { DATABASE_URL = url } })
    local took = sys.now() - t0
    local out = r.stdout .. r.stderr
    assert.are.equal(0, r.code, out)
    assert.matches("postgresql://" .. role .. "@", out, 1, true) -- it ran as that role
    -- The log names the blocker as what it is, although this role cannot
    -- see it in pg_stat_activity.
    assert.matches('enforce NOT NULL on "public"."MetricDaily" %(step [%w_]+%): waiting up to 1300ms for SHARE '
      .. 'UPDATE EXCLUSIVE, held by pid %d+ %(autovacuum worker %(probably; not visible to this role%), holds '
      .. 'ShareUpdateExclusiveLock on "MetricDaily"%); PostgreSQL cancels an autovacuum', out)
    assert.is_nil(out:find("gave up", 1, true), out)
    assert.is_true(took < 30, "deploy took " .. took .. " s")
    -- deploy's backfill filled ChatMessage, and VACUUMed it (it changed it)
    assert.matches("backfill ChatMessage: VACUUM (ANALYZE) in ", out, 1, true)
    dh.assert_final(conn, counts)

    -- The emergency rollback (DROP NOT NULL on the four tables in one
    -- transaction) gets past a worker the same way.  The table still has its
    -- dead rows, so autovacuum is back on it within a second or so.
    local function on_table()
      return conn:query_value([[SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.relation = '"MetricDaily"'::regclass AND l.granted AND a.backend_type = 'autovacuum worker']])
    end
    assert.is_truthy(eventually(30, on_table), "autovacuum did not come back to MetricDaily within 30 s")
    r = dh.flow(t, "rollback", { "--yes" }, { env = { DATABASE_URL = url } })
    out = r.stdout .. r.stderr
    assert.are.equal(0, r.code, out)
    assert.matches('DROP NOT NULL on "public"."Connection", "public"."MetricDaily", "public"."Insight", '
      .. '"public"."ChatMessage": waiting up to 1300ms for SHARE UPDATE EXCLUSIVE, held by pid %d+ %(autovacuum '
      .. 'worker', out)
    assert.are.equal(0, dh.not_null_columns(conn))
    r = dh.flow(t, "deploy", { "--no-build" }, { env = { DATABASE_URL = url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    -- NOT NULL again everywhere; the data is as checked above (neither run had a row to fill)
    assert.are.equal(4, dh.not_null_columns(conn))
    assert.are.equal("up_to_date", prisma.status(conn, dh.migrations).state)
    assert.matches("skipped: no NULL workspaceId values", r.stdout, 1, true)
  end)
end)

describe("a rollout NOT NULL on some of its tables only", function()
  for _, flow in ipairs { "deploy", "recover" } do
    it("is shown by status, and " .. flow .. " finishes it", function()
      local t = dh.create("nullable")
      finally(function() dh.drop(t) end)
      local conn = t.conn
      local r = dh.flow(t, "backfill")
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      local counts = dh.counts(conn)
      -- One table enforced (as a run that gave up on the next leaves it), and
      -- one left half way, with its CHECK constraint NOT VALID.
      conn:exec([[ALTER TABLE "Connection" ALTER COLUMN "workspaceId" SET NOT NULL]])
      conn:exec([[ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_workspaceId_not_null"
        CHECK ("workspaceId" IS NOT NULL) NOT VALID]])

      local partial = "NOT NULL on 1 of 4 tables: Connection; the others (MetricDaily, Insight, ChatMessage): run "
        .. "dhrun deploy (or dhrun recover) to finish"
      r = dh.flow(t, "status", { "--no-build" })
      assert.are.equal(1, r.code, r.stdout .. r.stderr) -- the NOT NULL migration is pending
      local out = r.stdout .. r.stderr
      assert.matches(partial, out, 1, true)
      assert.matches("Connection     NOT NULL enforced", out, 1, true)
      assert.matches("MetricDaily    no NULLs, CHECK constraint NOT VALID (NOT NULL enforcement stopped half way)",
        out, 1, true)
      assert.matches("Insight        no NULLs\n", r.stdout, 1, true)
      -- the check itself holds: there is no NULL
      r = dh.flow(t, "check")
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches(partial, r.stdout .. r.stderr, 1, true)
      -- what deploy would do
      r = dh.flow(t, "deploy", { "--no-build", "--dry-run" })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("workspaceId is NOT NULL already on Connection; make workspaceId NOT NULL online on "
        .. "MetricDaily, Insight, ChatMessage", r.stdout, 1, true)

      r = dh.flow(t, flow, { "--no-build" })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      dh.assert_final(conn, counts)

      r = dh.flow(t, "status", { "--no-build" })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      assert.is_nil((r.stdout .. r.stderr):find("NOT NULL on ", 1, true))
    end)
  end
end)
