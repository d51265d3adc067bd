-- dhrun status: one verdict line first, and true; Prisma's own words kept
-- for scripts that grep them, but never under a headline the next line
-- refutes; every hint fits the failure it follows.
local dh = require "datahub"

local function lines(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do out[#out + 1] = line:gsub("^%S+Z %u+%s+", "") end
  return out
end

local function count(s, needle)
  local n, pos = 0, 1
  while true do
    local i = s:find(needle, pos, true)
    if not i then return n end
    n, pos = n + 1, i + 1
  end
end

describe("dhrun status", function()
  it("up to date: the verdict says so first, and Prisma's line appears once", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local l = lines(r.stdout)
    assert.matches("^verdict: up to date: 3 migration%(s%) applied; Data Hub workspaceId backfilled, no NULLs$", l[2])
    assert.are.equal(1, count(r.stdout, "Database schema is up to date!"))
  end)

  it("after a rollback: NOT up to date first, and Prisma's words only as what Prisma would say", function()
    local t = dh.create("rolled_back")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local l = lines(r.stdout)
    assert.matches("^verdict: NOT up to date: migration " .. dh.NOT_NULL .. " is recorded as rolled back", l[2])
    local said = r.stdout:find("prisma migrate status would say:", 1, true)
    local prisma_line = r.stdout:find("Database schema is up to date!", 1, true)
    assert.is_truthy(said and prisma_line and said < prisma_line, "Prisma's line only under 'would say'")
    assert.are.equal(1, count(r.stdout, "Database schema is up to date!"))
  end)

  it("before the rollout: NOT up to date, naming the migration still to apply and the flow that does it", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("verdict: NOT up to date: migrations: 2 migration(s) not applied yet (" .. dh.NULLABLE
      .. "…); run dhrun deploy", r.stdout, 1, true)
  end)

  it("a failed migration that is not the rollout's: the hint is resolve, never recover", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    t.conn:exec([[INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, applied_steps_count)
      SELECT gen_random_uuid()::text, checksum, migration_name, now(), 0 FROM _prisma_migrations
       WHERE migration_name = $1]], dh.INIT)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    local all = r.stdout .. r.stderr
    assert.matches("verdict: NOT up to date: migrations: migration " .. dh.INIT .. " failed; fix the database by hand, "
      .. "then dhrun resolve --rolled-back " .. dh.INIT, all, 1, true)
    assert.is_nil(all:find("recover", 1, true), "recover would refuse it")
    r = dh.flow(t, "deploy", { "--no-build" })
    assert.are.equal(1, r.code)
    assert.matches("hint: see what failed (dhrun status), fix the database by hand, then record it: dhrun resolve "
      .. "--rolled-back " .. dh.INIT, r.stderr, 1, true)
  end)
end)

describe("dhrun rollback without confirmation", function()
  it("changes nothing and records nothing: no run in the journal, no journal schema created", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    t.conn:exec("DROP SCHEMA dhrun CASCADE")
    local before = dh.fingerprint(t.conn)
    local r = dh.flow(t, "rollback", {})
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("refusing to roll back without confirmation: standard input is not a terminal", r.stderr, 1, true)
    assert.matches("nothing was changed", r.stderr, 1, true)
    assert.are.equal(before, dh.fingerprint(t.conn))
    assert.is_false(t.conn:query_value("SELECT to_regnamespace('dhrun') IS NOT NULL"), "no journal schema")
  end)
end)
