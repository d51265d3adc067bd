-- Fault injection: the release flows survive what happens at 3 a.m. — dhrun
-- killed with SIGKILL at every step boundary, PostgreSQL restarting under a
-- backfill, the connection killed inside migration #2, a second dhrun, and
-- Ctrl-C.  Everything is real: the example Data Hub on the harness's
-- PostgreSQL, dhrun as a subprocess.  After each fault, what the README tells
-- a user to run reaches the final state with no row lost or set wrongly.
local sh = require "sh"
local dh = require "datahub"
local db = require "dhrun.db"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"
local prisma = require "dhrun.prisma"
local testdb = require "testdb"

local function eventually(seconds, fn)
  local deadline = sys.now() + seconds
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.02)
  until sys.now() > deadline
  return nil
end

-- A dhrun subprocess: its output goes to files so that nothing blocks it.
-- Under `make valgrind` it runs under valgrind too (DHRUN_BIN_WRAPPER).
local function start(t, args, cfg, env)
  local dir = sh.tmpdir()
  local argv = {}
  for w in (os.getenv("DHRUN_BIN_WRAPPER") or ""):gmatch("%S+") do argv[#argv + 1] = w end
  for _, a in ipairs({ sh.bin, args[1], "--config", cfg }) do argv[#argv + 1] = a end
  for i = 2, #args do argv[#argv + 1] = args[i] end
  local e = { DATABASE_URL = t.url }
  for k, v in pairs(env or {}) do e[k] = v end
  local proc = process.spawn(argv, { cwd = sh.root, env = e, stdout = dir .. "/out", stderr = dir .. "/err" })
  return proc, function()
    return { stdout = sh.read(dir .. "/out") or "", stderr = sh.read(dir .. "/err") or "" }
  end
end

-- dhrun's sessions on the test database (application_name "dhrun").
local function dhrun_sessions(t, extra)
  return t.conn:query_value([[SELECT count(*) FROM pg_stat_activity WHERE datname = $1
    AND application_name = 'dhrun' AND pid <> pg_backend_pid() ]] .. (extra or ""), t.name)
end

-- After a kill -9 the server notices the dead client at once, but only
-- once its backend has exited is the release lock free: wait for that.
local function wait_sessions_gone(t)
  assert.is_truthy(eventually(10, function() return dhrun_sessions(t) == 0 end), "dhrun's session did not end")
end

local function filled(t, table_name)
  return t.conn:query_value('SELECT count(*) FROM "' .. table_name .. '" WHERE "workspaceId" IS NOT NULL')
end

-- Is process `pid` still there?  A zombie (state Z) has finished.
local function alive(pid)
  local stat = sh.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

local function journal_run(t, id)
  return t.conn:query_one("SELECT id, status, exit_code, started_at, finished_at FROM dhrun.runs WHERE id = $1", id)
end

local function journal_steps(t, id)
  return t.conn:query("SELECT seq, status FROM dhrun.steps WHERE run_id = $1 ORDER BY seq", id)
end

-- Small batches with a pause: a backfill that takes a few seconds.
local SLOW = "cfg.rollouts[1].batch = { size = 200, max = 200, pause = 0.05 }"

---------------------------------------------------------------------------
-- kill -9 at every step boundary (DHRUN_FAULT_KILL_AT, a test hook in
-- stdlib/core/dhrun/flow.lua: SIGKILL right before step N, after step N-1 is
-- journaled).

local KILL_CASES = {
  -- deploy from before the release, continued with --resume (the journal
  -- the killed run left is what it reads)
  { flow = "deploy", state = "pre", rerun = { "--resume" } },
  -- recover from a failed migration #2; the README: "safe to run at any point"
  { flow = "recover", state = "failed", rerun = {} },
}

for _, case in ipairs(KILL_CASES) do
  describe("kill -9 at every step boundary of " .. case.flow, function()
    for k = 1, 8 do
      it("before step " .. k .. "/8: the rerun reaches the final state, generate ran once", function()
        local t = dh.create(case.state)
        finally(function() dh.drop(t) end)
        local counts = dh.counts(t.conn)
        local cfg, dir = dh.config()
        local r = dh.flow(t, case.flow, {}, { config = cfg, env = { DHRUN_FAULT_KILL_AT = case.flow .. ":" .. k } })
        assert.are.equal(128 + 9, r.code, "killed by SIGKILL\n" .. r.stdout .. r.stderr)
        assert.not_matches(string.format("[%d/8]", k), r.stdout, 1, true)
        if k > 1 then assert.matches(string.format("[%d/8]", k - 1), r.stdout, 1, true) end
        wait_sessions_gone(t)
        -- The journal is exact up to the kill: steps 1..k-1 done, k not begun.
        assert.are.equal("running", journal_run(t, 1).status)
        local steps = journal_steps(t, 1)
        assert.are.equal(k - 1, #steps)
        for _, s in ipairs(steps) do assert.is_truthy(s.status == "ok" or s.status == "skipped", s.status) end

        r = dh.flow(t, case.flow, case.rerun, { config = cfg })
        assert.are.equal(0, r.code, r.stdout .. r.stderr)
        if case.rerun[1] == "--resume" then assert.matches("resuming run #1 (running", r.stdout, 1, true) end
        -- a migration the killed run applied is not applied again (deploy
        -- applies #1 at step 2; both flows apply #2 at step 5)
        for name, step in pairs({ [dh.NULLABLE] = 2, [dh.NOT_NULL] = 5 }) do
          if k > step then assert.not_matches("applying " .. name, r.stdout, 1, true) end
        end
        dh.assert_final(t.conn, counts)
        assert.are.equal("abandoned", journal_run(t, 1).status)
        assert.are.equal("ok", journal_run(t, 2).status)
        -- generate is not re-run unnecessarily, and not skipped either
        assert.are.equal("generated\n", sh.read(dir .. "/generate.log"))
      end)
    end
  end)
end

---------------------------------------------------------------------------

describe("PostgreSQL restarted in the middle of a backfill", function()
  -- pg_ctl on the harness's cluster, as its owner (postgres, when we are root)
  local function pg_ctl(...)
    local argv = { os.getenv("PGTEMP_BIN") .. "/pg_ctl", ... }
    if sys.uid() == 0 then argv = { "runuser", "-u", "postgres", "--", table.unpack(argv) } end
    return sh.run(argv)
  end

  it("the running dhrun exits 1 with a clear message; a rerun finishes", function()
    local data, server_log = os.getenv("PGTEMP_DIR") .. "/data", os.getenv("PGTEMP_DIR") .. "/server.log"
    local t, proc = dh.create("nullable"), nil
    finally(function()
      if proc then proc:stop(0) end
      -- whatever happened, leave the server up for the specs that follow
      if not pcall(function() testdb.admin():close() end) then
        pg_ctl("start", "-D", data, "-w", "-t", "60", "-l", server_log)
      end
      dh.drop(t)
    end)
    local counts = dh.counts(t.conn)
    local output
    proc, output = start(t, { "deploy", "--no-build" }, (dh.config(nil, SLOW)))
    assert.is_truthy(eventually(20, function() return filled(t, "MetricDaily") >= 400 end), "backfill never started")
    local r = pg_ctl("restart", "-D", data, "-m", "fast", "-w", "-t", "60", "-l", server_log)
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local done = assert(proc:wait(20), "dhrun did not stop")
    local out = output()
    assert.are.equal(1, done.code, out.stdout .. out.stderr)
    -- one FAILED line naming the cause (the server's goodbye, or the closed
    -- socket if dhrun was between batches), a hint, then where it stopped
    assert.is_truthy(out.stderr:find("FAILED: [57P01] terminating connection due to administrator command", 1, true)
      or out.stderr:find("FAILED: [08006] ", 1, true), out.stderr)
    assert.matches("hint: the database connection was lost (server restart, or the session was terminated); "
      .. "once the server is back, run dhrun deploy again", out.stderr, 1, true)
    assert.matches("deploy: FAILED at step 3/8 (Backfill workspaceId)", out.stderr, 1, true)
    assert.not_matches("traceback", out.stderr, 1, true)

    -- the server accepts connections again (pg_ctl -w waited for that)
    t.conn = assert(eventually(30, function()
      local ok, c = pcall(db.connect, t.conninfo)
      return ok and c
    end), "the server did not come back")
    assert.is_true(filled(t, "MetricDaily") < counts.MetricDaily, "the restart came before the backfill ended")
    r = dh.flow(t, "deploy", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    dh.assert_final(t.conn, counts)
    assert.are.equal("abandoned", journal_run(t, 1).status)
  end)
end)

---------------------------------------------------------------------------

describe("the connection killed while migration #2 runs", function()
  it("exits 1, leaves nothing applied (no half-written row), and the next deploy finishes", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    -- Two blockers let the test choose the moment, whatever dhrun does
    -- before it: only applying a migration writes to _prisma_migrations, so
    -- `a` (a SHARE lock on it) stops dhrun at migration #2's bookkeeping
    -- INSERT, inside its transaction.  Then `b` takes a share lock on
    -- "ChatMessage" and `a` lets go: the script starts and its first SET NOT
    -- NULL waits for `b`, in the middle of migration #2.
    local a <close> = t.connect()
    local b <close> = t.connect()
    a:exec("BEGIN")
    a:exec("LOCK TABLE _prisma_migrations IN SHARE MODE")
    local cfg = dh.config(nil, 'cfg.lock_timeout = "60s"; cfg.rollouts[1].lock_timeout = "60s"')
    local proc, output = start(t, { "deploy", "--no-build" }, cfg)
    finally(function() proc:stop(0) end)
    local function waiting(query_like)
      return t.conn:query_value([[SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'dhrun'
        AND wait_event_type = 'Lock' AND wait_event = 'relation' AND query LIKE $2]], t.name, query_like)
    end
    assert.is_truthy(eventually(30, function() return waiting("INSERT INTO _prisma_migrations%") end),
      "migration #2 never began")
    b:exec("BEGIN")
    b:exec('LOCK TABLE "ChatMessage" IN ACCESS SHARE MODE')
    a:exec("ROLLBACK")
    local pid = eventually(10, function() return waiting("%Made the column%") end)
    assert.is_truthy(pid, "migration #2's script never ran")
    assert.is_true(t.conn:query_value("SELECT pg_terminate_backend($1)", pid))
    local done = assert(proc:wait(20), "dhrun did not stop")
    b:exec("ROLLBACK")
    local out = output()
    assert.are.equal(1, done.code, out.stdout .. out.stderr)
    assert.matches("FAILED: [57P01] terminating connection due to administrator command", out.stderr, 1, true)
    assert.matches("deploy: FAILED at step 5/8 (Apply the NOT NULL migration (workspaceId, online))", out.stderr, 1,
      true)

    -- What the README says: the migration and its row commit together, so a
    -- killed run leaves no half-written row; Prisma sees #2 as pending.
    assert.are.equal(0, t.conn:query_value("SELECT count(*) FROM _prisma_migrations WHERE migration_name = $1",
      dh.NOT_NULL))
    local st = prisma.status(t.conn, dh.migrations)
    assert.are.equal("pending", st.state)
    assert.are.same({}, st.failed)
    -- "the next deploy just applies the migration"
    local r = dh.flow(t, "deploy", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("applied " .. dh.NOT_NULL, r.stdout, 1, true)
    dh.assert_final(t.conn, counts)
  end)
end)

---------------------------------------------------------------------------

describe("a second dhrun during a flow", function()
  it("exits 3 changing nothing, and one with --wait runs after the first: no interleaving", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local cfg = dh.config()
    -- A row lock on the last MetricDaily row holds the first run inside its
    -- backfill (each batch waits, then retries) until the test lets go.
    local blocker <close> = t.connect()
    blocker:exec("BEGIN")
    blocker:query('SELECT id FROM "MetricDaily" WHERE id = (SELECT max(id) FROM "MetricDaily") FOR UPDATE')
    local first, first_out = start(t, { "deploy", "--no-build" }, cfg)
    finally(function() first:stop(0) end)
    assert.is_truthy(eventually(30, function()
      return dhrun_sessions(t, "AND wait_event_type = 'Lock' AND query LIKE '%dhrun_batch%MetricDaily%'") > 0
    end), "the first run never reached the locked row")

    local r = dh.flow(t, "deploy", { "--no-build" }, { config = cfg })
    assert.are.equal(3, r.code, r.stdout .. r.stderr)
    assert.matches("another dhrun run holds the release lock: deploy (run #1)", r.stderr, 1, true)
    assert.not_matches("[1/8]", r.stdout, 1, true)
    local waiting, waiting_out = start(t, { "deploy", "--no-build", "--wait", "60" }, cfg)
    finally(function() waiting:stop(0) end)
    assert.is_truthy(eventually(30, function()
      return waiting_out().stdout:find("waiting up to 60.0 s for the release lock", 1, true)
    end), "the second run never waited")
    assert.is_true(first:running())
    blocker:exec("ROLLBACK")

    local a = assert(first:wait(60), "the first run did not finish")
    assert.are.equal(0, a.code, first_out().stdout .. first_out().stderr)
    local b = assert(waiting:wait(60), "the waiting run did not finish")
    assert.are.equal(0, b.code, waiting_out().stdout .. waiting_out().stderr)
    assert.matches("deploy: ok — 2 done, 6 skipped", waiting_out().stdout, 1, true)

    -- The journal: the refused run left no trace, run 1 finished ok before
    -- run 2 began, and every step belongs to one of them.
    assert.are.equal(2, t.conn:query_value("SELECT count(*) FROM dhrun.runs"))
    assert.are.equal("ok", journal_run(t, 1).status)
    assert.are.equal("ok", journal_run(t, 2).status)
    assert.is_true(t.conn:query_value([[SELECT r1.finished_at <= (SELECT min(started_at) FROM dhrun.steps
      WHERE run_id = 2) AND r1.finished_at <= r2.started_at FROM dhrun.runs r1, dhrun.runs r2
      WHERE r1.id = 1 AND r2.id = 2]]))
    assert.are.equal(8, #journal_steps(t, 1))
    dh.assert_final(t.conn, counts)
  end)
end)

---------------------------------------------------------------------------

describe("Ctrl-C", function()
  it("during a slow backfill: exit 130, session gone, journal 'interrupted' at step 3, --resume finishes", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local cfg = dh.config(nil, SLOW)
    local proc, output = start(t, { "deploy", "--no-build" }, cfg)
    finally(function() proc:stop(0) end)
    assert.is_truthy(eventually(20, function() return filled(t, "MetricDaily") >= 400 end), "backfill never started")
    local t0 = sys.now()
    proc:kill("INT") -- to the process group, as a terminal does
    local r = assert(proc:wait(10), "dhrun did not stop")
    assert.is_true(sys.now() - t0 < 3, "took " .. (sys.now() - t0) .. " s")
    local out = output()
    assert.are.equal(130, r.code, out.stdout .. out.stderr)
    assert.matches("interrupted (Ctrl-C)", out.stderr, 1, true)
    assert.matches("deploy: stopped at step 3/8 (Backfill workspaceId)", out.stderr, 1, true)
    assert.matches("next: dhrun deploy --resume", out.stdout, 1, true)
    wait_sessions_gone(t)
    assert.are.equal("interrupted", journal_run(t, 1).status)
    assert.are.equal(130, journal_run(t, 1).exit_code)
    local steps = journal_steps(t, 1)
    assert.are.same({ seq = 3, status = "interrupted" }, { seq = steps[#steps].seq, status = steps[#steps].status })
    local part = filled(t, "MetricDaily")
    assert.is_true(part > 0 and part < counts.MetricDaily, "interrupted mid-way (" .. part .. ")")

    local again = dh.flow(t, "deploy", { "--no-build", "--resume" }, { config = cfg })
    assert.are.equal(0, again.code, again.stdout .. again.stderr)
    assert.matches("resuming run #1 (interrupted", again.stdout, 1, true)
    dh.assert_final(t.conn, counts)
  end)

  it("status while a backfill runs: says to let that run finish, not to start another", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local cfg = dh.config(nil, SLOW)
    local proc = start(t, { "backfill" }, cfg)
    finally(function() proc:stop(0) end)
    assert.is_truthy(eventually(20, function() return filled(t, "MetricDaily") >= 400 end), "backfill never started")
    local r = dh.flow(t, "status", { "--no-build" }, { config = cfg })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local wait = "run #1 (backfill by " .. sys.user() .. "@" .. sys.hostname() .. ", since "
    assert.matches("verdict: NOT up to date: ", r.stdout, 1, true)
    assert.matches(wait, r.stdout, 1, true)
    assert.matches("is in progress: let it finish, then run dhrun status again", r.stdout, 1, true)
    assert.matches("hint: " .. wait, r.stderr, 1, true)
    assert.is_nil(r.stderr:find("run dhrun backfill", 1, true), r.stderr)
    proc:stop()
  end)

  it("--resume goes on with the options the interrupted run was given (its throttling), unless given again",
    function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    local cfg = dh.config()
    local proc, output = start(t, { "backfill", "--batch-size", "150", "--pause", "0.05" }, cfg)
    finally(function() proc:stop(0) end)
    assert.is_truthy(eventually(20, function() return filled(t, "MetricDaily") >= 450 end), "backfill never started")
    proc:kill("TERM")
    local r = assert(proc:wait(10), "dhrun did not stop")
    local out = output()
    assert.are.equal(143, r.code, out.stdout .. out.stderr)
    assert.matches("next: dhrun backfill --resume", out.stdout, 1, true)
    wait_sessions_gone(t)
    local report = sh.tmpdir() .. "/resume.json"
    local again = dh.flow(t, "backfill", { "--resume", "--pause", "0", "--report-json", report }, { config = cfg })
    assert.are.equal(0, again.code, again.stdout .. again.stderr)
    assert.matches("with its options: --batch-size 150 (give one again to change it)", again.stdout, 1, true)
    local sizes = {}
    for _, e in ipairs(require("cjson").decode(sh.read(report)).events) do
      if e.kind == "batch" and e.table == "MetricDaily" then sizes[e.batch_size] = true end
    end
    assert.are.same({ [150] = true }, sizes, "the resumed run kept --batch-size 150")
    -- journaled with what it carried, so that a further --resume finds it too
    assert.matches(",--resume,--pause,0,--report-json," .. report .. ",--batch-size,150}",
      t.conn:query_value("SELECT args::text FROM dhrun.runs WHERE id = 2"), 1, true)
    r = dh.flow(t, "deploy", { "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    dh.assert_final(t.conn, counts)
  end)

  it("during a slow build: its child and grandchild are gone, journal 'interrupted' at step 8", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local counts = dh.counts(t.conn)
    -- The first build hangs in a grandchild that ignores SIGINT (a
    -- background job of a non-interactive sh); later builds succeed.
    local cfg, dir = dh.config(nil, [[cfg.commands.build = { "sh", "-c",
      "if [ -e slow.done ]; then echo 'Compiled successfully'; exit 0; fi; touch slow.done; echo $$ > build.pid; " ..
      "sleep 300 & echo $! > sleep.pid; wait" }]])
    local proc, output = start(t, { "deploy" }, cfg)
    finally(function() proc:stop(0) end)
    local pids = eventually(30, function()
      local a, b = tonumber(sh.read(dir .. "/build.pid") or ""), tonumber(sh.read(dir .. "/sleep.pid") or "")
      return a and b and { a, b }
    end)
    assert.is_truthy(pids, "the build never started")
    assert.is_true(alive(pids[1]) and alive(pids[2]))
    proc:kill("INT")
    local r = assert(proc:wait(15), "dhrun did not stop")
    local out = output()
    assert.are.equal(130, r.code, out.stdout .. out.stderr)
    assert.matches("deploy: stopped at step 8/8 (Build the application)", out.stderr, 1, true)
    assert.is_truthy(eventually(5, function() return not alive(pids[1]) and not alive(pids[2]) end),
      "the build's processes outlived dhrun")
    assert.are.equal("interrupted", journal_run(t, 1).status)
    assert.are.equal("interrupted", journal_steps(t, 1)[8].status)

    local again = dh.flow(t, "deploy", { "--resume" }, { config = cfg })
    assert.are.equal(0, again.code, again.stdout .. again.stderr)
    assert.matches("Compiled successfully", again.stdout, 1, true)
    assert.not_matches("applying ", again.stdout, 1, true)
    assert.are.equal("generated\n", sh.read(dir .. "/generate.log"), "generate ran once")
    dh.assert_final(t.conn, counts)
  end)
end)
