-- The release flows end to end, as a user runs them (dhrun NAME --config ...
-- as a real subprocess), from every starting state of the release, against
-- the example Data Hub on a real PostgreSQL.
local cjson = require "cjson"
local sh = require "sh"
local dh = require "datahub"
local prisma = require "dhrun.prisma"
local sys = require "dhrun.core.sys"

local function public_fp(conn)
  -- everything but the journal, which records every run by design
  return dh.fingerprint(conn, true)
end

describe("deploy", function()
  it("runs the whole checklist from the pre-tenancy state, then a rerun changes nothing", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local cfg, dir = dh.config()
    local r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    for _, s in ipairs({ "[1/8] Preflight: no failed migration in the history",
      "[2/8] Apply the migrations before the workspaceId backfill", "applied " .. dh.NULLABLE,
      "[3/8] Backfill workspaceId", "[4/8] Verify no NULL workspaceId (MUST pass)",
      "✅ All Data Hub workspaceId values are backfilled (no NULLs).",
      "[5/8] Apply the NOT NULL migration (workspaceId, online)", "applied " .. dh.NOT_NULL,
      "[6/8] Apply later migrations", "skipped: no pending migrations after " .. dh.NOT_NULL,
      "[7/8] Regenerate the client", "[8/8] Build the application", "Compiled successfully", "deploy: ok" }) do
      assert.matches(s, r.stdout, 1, true)
    end
    dh.assert_final(t.conn, nil)
    assert.are.same(counts, dh.counts(t.conn))
    assert.are.equal("generated\n", sh.read(dir .. "/generate.log"))

    local before = public_fp(t.conn)
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: " .. dh.NULLABLE .. " is already applied", r.stdout, 1, true)
    assert.matches("skipped: no NULL workspaceId values", r.stdout, 1, true)
    assert.matches("skipped: " .. dh.NOT_NULL .. " is already applied", r.stdout, 1, true)
    assert.matches("skipped: no pending migrations after " .. dh.NOT_NULL, r.stdout, 1, true)
    assert.matches("skipped: schema unchanged since the last generate", r.stdout, 1, true)
    assert.matches("deploy: ok — 3 done, 5 skipped, 0 failed", r.stdout, 1, true)
    assert.are.equal(before, public_fp(t.conn))
    assert.are.equal("generated\n", sh.read(dir .. "/generate.log"), "generate did not run again")
  end)

  for _, state in ipairs({ "nullable", "half", "rolled_back" }) do
    it("reaches the final state from the '" .. state .. "' state", function()
      local t = dh.create(state)
      finally(function() dh.drop(t) end)
      local counts = dh.counts(t.conn)
      local r = dh.flow(t, "deploy", { "--no-build" })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      dh.assert_final(t.conn, counts)
    end)
  end

  it("refuses to run on top of a failed migration #2, changing nothing", function()
    local t = dh.create("failed")
    finally(function() dh.drop(t) end)
    local before = public_fp(t.conn)
    local r = dh.flow(t, "deploy", { "--no-build" })
    assert.are.equal(1, r.code)
    assert.matches("migration " .. dh.NOT_NULL .. " failed earlier", r.stderr, 1, true)
    assert.matches("hint: run dhrun recover", r.stderr, 1, true)
    assert.are.equal(before, public_fp(t.conn))
  end)

  it("--dry-run prints the plan with the SQL and changes nothing at all", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local before = dh.fingerprint(t.conn)
    local r = dh.flow(t, "deploy", { "--dry-run" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("[dry run: nothing will be changed]", r.stdout, 1, true)
    assert.matches("would run:", r.stdout, 1, true)
    assert.matches('ALTER TABLE "MetricDaily" ADD COLUMN%s+"workspaceId" TEXT;', r.stdout)
    assert.matches("nothing changed", r.stdout, 1, true)
    assert.are.equal(before, dh.fingerprint(t.conn))
    assert.is_false(t.conn:query_value("SELECT to_regnamespace('dhrun') IS NOT NULL"), "no journal schema")
  end)

  it("stops before migration #2 when the check finds NULLs, and --resume continues", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    -- a backfill rule that leaves ChatMessage NULL: the MUST-pass check fails
    local broken = dh.config(nil, 'cfg.rollouts[1].tables[4] = { "ChatMessage", value = "NULL" }')
    local r = dh.flow(t, "deploy", { "--no-build" }, { config = broken })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("FAILED: ❌ %d+ Data Hub workspaceId value%(s%) are NULL: ChatMessage %d+", r.stderr)
    assert.matches("hint: run the backfill (dhrun backfill), then dhrun deploy --resume; the NOT NULL migration "
      .. "was not attempted", r.stderr, 1, true)
    assert.matches("deploy: FAILED at step 4/8 (Verify no NULL workspaceId (MUST pass))", r.stderr, 1, true)
    assert.are.equal(0, dh.not_null_columns(t.conn), "migration #2 was not attempted")
    assert.are.equal("pending", prisma.status(t.conn, dh.migrations).state)

    -- the hint's advice: run the backfill (here with the fixed rule), then resume
    r = dh.flow(t, "backfill", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    r = dh.flow(t, "deploy", { "--no-build", "--resume" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("resuming run #1 (failed", r.stdout, 1, true)
    assert.matches("%[3/8%] Backfill workspaceId\n[^\n]*skipped: done in run #1", r.stdout)
    assert.matches("skipped: done in run #1", r.stdout, 1, true)
    dh.assert_final(t.conn)
  end)

  it("keeps a journal: who, where, version, each step, the migrations applied", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local report = sh.tmpdir() .. "/deploy.json"
    local junit = sh.tmpdir() .. "/deploy.xml"
    local r = dh.flow(t, "deploy", { "--no-build", "--report-json", report, "--report-junit", junit })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local run = t.conn:query_one("SELECT * FROM dhrun.runs ORDER BY id DESC LIMIT 1")
    assert.are.equal("deploy", run.flow)
    assert.are.equal("ok", run.status)
    assert.are.equal(0, run.exit_code)
    assert.are.equal(sys.user(), run.user_name)
    assert.are.equal(sys.hostname(), run.host)
    assert.matches("^%d+%.%d+%.%d+$", run.dhrun_version)
    local steps = t.conn:query("SELECT seq, status, detail FROM dhrun.steps WHERE run_id = $1 ORDER BY seq", run.id)
    assert.are.equal(8, #steps)
    assert.are.same({ dh.NULLABLE }, cjson.decode(steps[2].detail).applied)
    assert.are.same({ dh.NOT_NULL }, cjson.decode(steps[5].detail).applied)
    assert.are.equal("skipped", steps[6].status)
    assert.are.equal("skipped", steps[7].status)
    assert.are.equal("skipped", steps[8].status)
    local doc = cjson.decode(sh.read(report))
    assert.are.equal("ok", doc.status)
    assert.are.equal(8, #doc.steps)
    assert.matches('<testsuite name="deploy"', sh.read(junit), 1, true)
  end)

  it("lets only one flow run at a time: the second exits 3 and says who holds the lock", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local process = require "dhrun.process"
    local slow = dh.config(nil, "cfg.rollouts[1].batch = { size = 200, max = 200, pause = 0.3 }")
    -- the Data Hub checklist's old name for `dhrun backfill`, found with the example's flows
    local first = process.spawn({ sh.bin, "backfill-workspace", "--config", slow },
      { cwd = sh.root, env = { DATABASE_URL = t.url, DHRUN_PATH = dh.example .. "/scripts" } })
    -- wait until the first run is journaled as running (two queries: one naming dhrun.runs fails to parse
    -- until the first run has created it, which a slow start, as under valgrind, leaves for later)
    local function first_running()
      return t.conn:query_value("SELECT to_regclass('dhrun.runs') IS NOT NULL")
        and t.conn:query_value("SELECT EXISTS (SELECT 1 FROM dhrun.runs WHERE status = 'running')")
    end
    local deadline = sys.now() + 10
    repeat sys.sleep(0.1) until sys.now() > deadline or first_running()
    assert.is_true(first_running(), "the first run never started")
    local r = dh.flow(t, "deploy", { "--no-build" })
    first:stop()
    assert.are.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("another dhrun run holds the release lock: backfill%-workspace %(run #1%) by [^@]+@", r.stderr)
    assert.matches("nothing was changed", r.stderr, 1, true)
    assert.are.equal(0, dh.not_null_columns(t.conn))
  end)

  it("survives kill -9 in the middle of the backfill: a rerun finishes with no row lost or wrong", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local process = require "dhrun.process"
    local slow = dh.config(nil, "cfg.rollouts[1].batch = { size = 300, max = 300, pause = 0.05 }")
    local child = process.spawn({ sh.bin, "backfill", "--config", slow },
      { cwd = sh.root, env = { DATABASE_URL = t.url } })
    -- kill once some but not all MetricDaily rows are done
    local deadline = sys.now() + 20
    repeat sys.sleep(0.05) until sys.now() > deadline or t.conn:query_value(
      [[SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NOT NULL]]) >= 600
    child:kill("KILL")
    child:wait(5)
    local done = t.conn:query_value([[SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NOT NULL]])
    assert.is_true(done > 0 and done < counts.MetricDaily, "killed mid-way (" .. done .. ")")
    local r = dh.flow(t, "deploy", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    dh.assert_final(t.conn, counts)
    assert.are.equal("abandoned", t.conn:query_value("SELECT status FROM dhrun.runs WHERE id = 1"))
  end)
end)

describe("recover", function()
  it("recovers a failed migration #2 as the checklist says", function()
    local t = dh.create("failed")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local r = dh.flow(t, "recover", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches(dh.NOT_NULL .. " failed: recovering", r.stdout, 1, true)
    assert.matches("marked " .. dh.NOT_NULL .. " rolled back (1 failed row(s))", r.stdout, 1, true)
    assert.matches("Compiled successfully", r.stdout, 1, true)
    dh.assert_final(t.conn, counts)
    -- Prisma's view of the history: the failed row rolled back, a new applied row
    local rows = t.conn:query([[SELECT finished_at IS NOT NULL AS fin, rolled_back_at IS NOT NULL AS rb
      FROM _prisma_migrations WHERE migration_name = $1 ORDER BY started_at]], dh.NOT_NULL)
    assert.are.equal(2, #rows)
    assert.is_true(rows[1].rb)
    assert.is_true(rows[2].fin and not rows[2].rb)
  end)

  for _, state in ipairs({ "nullable", "half", "rolled_back" }) do
    it("finishes the rollout from the '" .. state .. "' state", function()
      local t = dh.create(state)
      finally(function() dh.drop(t) end)
      local counts = dh.counts(t.conn)
      local r = dh.flow(t, "recover", { "--no-build" })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      dh.assert_final(t.conn, counts)
    end)
  end

  it("does nothing on a healthy database", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local before = public_fp(t.conn)
    local r = dh.flow(t, "recover", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("nothing failed: every step below will be skipped", r.stdout, 1, true)
    assert.are.equal(before, public_fp(t.conn))
  end)

  it("refuses, changing nothing, before the rollout", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local before = public_fp(t.conn)
    local r = dh.flow(t, "recover", {})
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("nothing to recover: the migrations before the backfill are not all applied (" .. dh.NULLABLE
      .. ")", r.stderr, 1, true)
    assert.matches("hint: this database is before the rollout: run dhrun deploy", r.stderr, 1, true)
    assert.matches("recover: FAILED at step 1/8 (Find out what to recover)", r.stderr, 1, true)
    assert.are.equal(before, public_fp(t.conn))
  end)
end)

describe("rollback", function()
  it("refuses without --yes when stdin is not a terminal, changing nothing", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local before = public_fp(t.conn)
    local r = dh.flow(t, "rollback", {})
    assert.are.equal(2, r.code)
    assert.matches("refusing to roll back without confirmation: standard input is not a terminal", r.stderr, 1, true)
    assert.matches("pass --yes", r.stderr, 1, true)
    assert.are.equal(before, public_fp(t.conn))
  end)

  it("drops NOT NULL and marks the migration rolled back in one go, and says what next", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "rollback", { "--yes" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(0, dh.not_null_columns(t.conn))
    assert.are.equal(0, t.conn:query_value(
      "SELECT count(*) FROM _prisma_migrations WHERE migration_name = $1 AND rolled_back_at IS NULL", dh.NOT_NULL))
    -- (no NULLs: the rollback was for another reason)
    assert.matches("next: no NULLs now: once the cause of the rollback is fixed, re-deploy the NOT NULL migration: "
      .. "dhrun deploy", r.stdout, 1, true)
    local st = prisma.status(t.conn, dh.migrations)
    assert.are.same({ dh.NOT_NULL }, st.rerun)
    -- a second rollback has nothing to do; with NULLs written meanwhile, it says to fix them first
    t.conn:exec([[UPDATE "ChatMessage" SET "workspaceId" = NULL]])
    r = dh.flow(t, "rollback", { "--yes" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: nothing to roll back", r.stdout, 1, true)
    assert.matches("next: fix the NULLs: dhrun backfill, then re-deploy the NOT NULL migration: dhrun deploy",
      r.stdout, 1, true)
  end)
end)

describe("status and check", function()
  it("print the checklist's expected messages on a deployed database", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Database schema is up to date!", r.stdout, 1, true)
    assert.matches("✅ All Data Hub workspaceId values are backfilled (no NULLs).", r.stdout, 1, true)
    assert.matches("Compiled successfully", r.stdout, 1, true)
    r = dh.flow(t, "check", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("NOT NULL enforced", r.stdout, 1, true)
    -- the Data Hub checklist's old name, with the example's flows
    r = dh.flow(t, "check-workspace", {})
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("dhrun check-workspace — ", r.stdout, 1, true)
    assert.matches("NOT NULL enforced", r.stdout, 1, true)
  end)

  it("report pending migrations and NULL offenders per table with exit 1", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code)
    assert.matches("Following migration have not yet been applied:", r.stdout, 1, true)
    assert.matches("Z INFO        " .. dh.NOT_NULL .. "\n", r.stdout, 1, true)
    r = dh.flow(t, "check", {})
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    for _, name in ipairs(dh.TABLES) do assert.matches(name .. "%s+%d+ NULL row%(s%)", r.stdout) end
    assert.matches("hint: run dhrun backfill (or dhrun deploy, which backfills first)", r.stderr, 1, true)
  end)
end)

describe("bad input", function()
  it("--resume with no journal: one clear line, exit 2", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "deploy", { "--resume" })
    assert.are.equal(2, r.code)
    assert.matches("nothing to resume: the journal has no earlier run of deploy", r.stderr, 1, true)
  end)

  it("an unknown flag is refused before anything runs", function()
    local r = sh.dhrun({ "deploy", "--dry-rn" }, { cwd = sh.root })
    assert.are.equal(2, r.code)
    assert.are.equal("dhrun: unknown option '--dry-rn' (did you mean '--dry-run'?) (see dhrun deploy --help)\n",
      r.stderr)
  end)

  it("a config naming a missing table or a typo'd setting: exit 2, one line", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local before = dh.fingerprint(t.conn)
    local cfg = dh.config(nil, 'cfg.rollouts[1].tables = { cfg.rollouts[1].tables[1], '
      .. '{ "Metrics", parent = "connectionId -> Connection" } }')
    local r = dh.flow(t, "check", {}, { config = cfg })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.are.equal("", r.stdout)
    assert.matches("^dhrun: rollout workspace names Metrics, which is not a table in schema public\n", r.stderr)
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("^dhrun: rollout workspace names Metrics, which is not a table in schema public\n", r.stderr)
    cfg = dh.config(nil, "cfg.rolouts = {}")
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("unknown setting 'rolouts' in the config (did you mean 'rollouts'?)", r.stderr, 1, true)
    assert.are.equal(before, dh.fingerprint(t.conn))
  end)
end)

describe("secrets", function()
  it("the database password appears in no output, report or journal row", function()
    local testdb = require "testdb"
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local password = testdb.password()
    local url = testdb.tcp_url(t.name, password)
    local encoded = url:match("^postgresql://dhrun_pw:([^@]+)@")
    assert.are.equal(password, (encoded:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)))
    local dir = sh.tmpdir()
    local r = dh.flow({ url = url }, "deploy", { "--report-json", dir .. "/r.json", "--report-junit", dir .. "/r.xml",
      "--verbose" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local fail = dh.flow({ url = url }, "deploy", { "--bogus" })
    assert.are.equal(2, fail.code)
    for _, text in ipairs({ r.stdout, r.stderr, fail.stderr, sh.read(dir .. "/r.json"), sh.read(dir .. "/r.xml"),
      dh.fingerprint(t.conn), t.conn:query_value("SELECT string_agg(r::text, ' ') FROM dhrun.runs r"),
      t.conn:query_value("SELECT string_agg(s::text, ' ') FROM dhrun.steps s") }) do
      assert.is_nil(text:find(password, 1, true), "password found in: " .. text:sub(1, 200))
      assert.is_nil(text:find(encoded, 1, true), "encoded password found in: " .. text:sub(1, 200))
    end
    assert.matches("postgresql://dhrun_pw@127.0.0.1:", r.stdout, 1, true)
  end)
end)

describe("resolve", function()
  it("marks a failed migration rolled back, as prisma migrate resolve does", function()
    local t = dh.create("failed")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "resolve", { "--rolled-back", dh.NOT_NULL })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Migration " .. dh.NOT_NULL .. " marked as rolled back.", r.stdout, 1, true)
    assert.are.same({}, prisma.status(t.conn, dh.migrations).failed)
  end)

  it("refuses a migration in the wrong state with Prisma's reason, changing nothing", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local before = public_fp(t.conn)
    local r = dh.flow(t, "resolve", { "--rolled-back", dh.NOT_NULL })
    assert.are.equal(1, r.code)
    assert.matches("is not in a failed state, so it cannot be marked rolled back (Prisma P3012)", r.stderr, 1, true)
    r = dh.flow(t, "resolve", { "--applied", dh.NOT_NULL })
    assert.are.equal(1, r.code)
    assert.matches("(Prisma P3008)", r.stderr, 1, true)
    assert.are.equal(before, public_fp(t.conn))
  end)

  it("needs exactly one of --applied and --rolled-back, before connecting", function()
    local r = sh.dhrun({ "resolve", "--applied", "a", "--rolled-back", "b" }, { cwd = sh.root })
    assert.are.equal(2, r.code)
    assert.are.equal("dhrun: Pass either --applied or --rolled-back, not both.\n", r.stderr)
  end)
end)

describe("backfill", function()
  it("honours --batch-size (a fixed size) and refuses a bad one before connecting", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "backfill", { "--batch-size", "1000" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local detail = cjson.decode(t.conn:query_value(
      "SELECT detail FROM dhrun.steps WHERE run_id = (SELECT max(id) FROM dhrun.runs) AND seq = 1"))
    local batches
    for _, tb in ipairs(detail.tables) do
      if tb.table == "MetricDaily" then batches = tb.batches end
    end
    -- 5000 rows in batches of at most 1000 (plus the empty batch that finds the end)
    assert.is_true(batches == 5 or batches == 6, "batches: " .. tostring(batches))
    r = sh.dhrun({ "backfill", "--batch-size", "abc", "--dry-run" }, { cwd = sh.root })
    assert.are.equal(2, r.code)
    assert.are.equal("dhrun: --batch-size needs a whole number >= 1, not 'abc'\n", r.stderr)
    -- the Data Hub checklist's old name takes the same options and checks them the same way
    r = sh.dhrun({ "backfill-workspace", "--batch-size", "0", "--dry-run" },
      { cwd = sh.root, env = { DHRUN_PATH = dh.example .. "/scripts" } })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.are.equal("dhrun: --batch-size needs a whole number >= 1, not '0'\n", r.stderr)
  end)

  it("with batch.workers = 2: exact data, and the workers' lines sit under the step like the run's own", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local cfg = dh.config(nil, "cfg.rollouts[1].batch = { size = 500, workers = 2 }")
    local r = dh.flow(t, "backfill", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(0, dh.rule_violations(t.conn))
    local workers = 0
    for line in r.stdout:gmatch("[^\n]+") do
      if line:find("worker %d/2%)") then
        workers = workers + 1
        assert.matches("^%S+ %u+ +      backfill %w+ %(pass 1, worker %d/2%)", line)
      end
    end
    assert.is_true(workers >= 2, r.stdout)
  end)
end)
