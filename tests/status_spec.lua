-- dhrun status: one verdict line first, and true; Prisma's own words kept
-- for scripts that grep them, but never under a headline the next line
-- refutes; every hint fits the failure it follows.
local dh = require "datahub"
local sh = require "sh"

local function lines(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do out[#out + 1] = line:gsub("^%S+Z %u+%s+", "") end
  return out
end

describe("dhrun status", function()
  it("up to date: the verdict says so first, and Prisma's line appears once", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local l = lines(r.stdout)
    assert.matches("^verdict: up to date: 3 migration%(s%) applied; Data Hub workspaceId backfilled, no NULLs$", l[2])
    assert.are.equal(1, sh.count(r.stdout, "Database schema is up to date!"))
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
    assert.are.equal(1, sh.count(r.stdout, "Database schema is up to date!"))
  end)

  it("before the rollout: NOT up to date, naming the migration still to apply and the flow that does it", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("verdict: NOT up to date: migrations: 2 migration(s) not applied yet (" .. dh.NULLABLE
      .. "…); run dhrun deploy", r.stdout, 1, true)
  end)

  it("after a failed NOT NULL migration: the verdict and the NULL check both say recover, never deploy", function()
    local t = dh.create("failed")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "status", { "--no-build" })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("verdict: NOT up to date: migrations: migration " .. dh.NOT_NULL .. " failed; run dhrun recover",
      r.stdout, 1, true)
    assert.matches("hint: run dhrun recover", r.stderr, 1, true)
    assert.is_nil((r.stdout .. r.stderr):find("dhrun deploy", 1, true), r.stdout .. r.stderr)
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

describe("the build", function()
  it("runs only when its inputs changed since the last successful build, and says so when it skips", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local cfg, dir = dh.config(nil, [[
cfg.build_inputs = { "src" }
cfg.commands.build = { "sh", "-c", "echo built >> build.log; echo 'Compiled successfully'" }]])
    sh.write(dir .. "/src/app.ts", "export const a = 1;\n")
    -- the first deploy here generates the client, so it builds
    local r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("build ok: Compiled successfully", r.stdout, 1, true)
    r = dh.flow(t, "status", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: build inputs unchanged since the last successful build (1 file(s), sha256 ", r.stdout,
      1, true)
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: schema unchanged since the last generate", r.stdout, 1, true)
    assert.matches("skipped: build inputs unchanged", r.stdout, 1, true)
    assert.are.equal("built\n", sh.read(dir .. "/build.log"), "built once")
    sh.write(dir .. "/src/app.ts", "export const a = 2;\n")
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal("built\nbuilt\n", sh.read(dir .. "/build.log"), "an input changed: built again")
  end)

  it("builds again after a failed build, even when the inputs are back as they were at the last success", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local cfg, dir = dh.config(nil, [[
cfg.build_inputs = { "src" }
cfg.commands.build = { "sh", "-c",
  "grep -q broken src/app.ts && exit 1; echo built >> build.log; echo 'Compiled successfully'" }]])
    sh.write(dir .. "/src/app.ts", "export const a = 1;\n")
    local r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    sh.write(dir .. "/src/app.ts", "broken\n")
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    sh.write(dir .. "/src/app.ts", "export const a = 1;\n")
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_nil(r.stdout:find("skipped: build inputs unchanged", 1, true), r.stdout)
    assert.are.equal("built\nbuilt\n", sh.read(dir .. "/build.log"))
  end)

  it("accepts a build input that only `generate` makes (a fresh checkout), and builds once it is there", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local cfg, dir = dh.config(nil, [[
cfg.generated = "gen/client"
cfg.build_inputs = { "src", "gen" }
cfg.commands.generate = { "sh", "-c", "mkdir -p gen/client && echo c > gen/client/index.js" }
cfg.commands.build = { "sh", "-c", "echo built >> build.log; echo 'Compiled successfully'" }]])
    sh.write(dir .. "/src/app.ts", "export const a = 1;\n")
    -- status verifies the build: with an input missing, it builds
    local r = dh.flow(t, "status", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal("built\n", sh.read(dir .. "/build.log"), r.stdout)
    -- deploy generates the client, so it builds again
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal("c\n", sh.read(dir .. "/gen/client/index.js"))
    assert.are.equal("built\nbuilt\n", sh.read(dir .. "/build.log"), r.stdout)
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("skipped: build inputs unchanged since the last successful build (2 file(s)", r.stdout, 1, true)
    -- the client gone: status builds without it and forgets the digest, so that once the same client is back the
    -- build runs again (a build made without it is no build of these inputs)
    assert.are.equal(0, sh.run({ "rm", "-r", dir .. "/gen" }).code)
    r = dh.flow(t, "status", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    sh.write(dir .. "/gen/client/index.js", "c\n")
    r = dh.flow(t, "status", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal(string.rep("built\n", 4), sh.read(dir .. "/build.log"), r.stdout)
    -- the input written as "./gen/" is the same path
    local slash = dh.config(nil, [[
cfg.generated = "gen/client"
cfg.build_inputs = { "./gen/" }]])
    r = dh.flow(t, "status", { "--no-build" }, { config = slash })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    -- a `generated` that generate never makes is said, not left to rebuild every time in silence
    r = dh.flow(t, "deploy", {}, { config = (dh.config(nil, 'cfg.generated = "gen/clinet"')) })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("generate did not create ", r.stderr, 1, true)
    -- a missing input that holds no generated client is still refused as a typo
    local typo, typo_dir = dh.config(nil, [[
cfg.generated = "gen/client"
cfg.build_inputs = { "srcc", "gen" }]])
    r = dh.flow(t, "status", {}, { config = typo })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("build_inputs names " .. typo_dir .. "/srcc, which does not exist", r.stderr, 1, true)
  end)
end)

describe("the example project in a fresh checkout (no generated client, no node_modules)", function()
  it("plans the release: its config loads, and generate and the build would run", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local dir = sh.tmpdir()
    local r = sh.run({ "sh", "-c", "tar -C " .. sh.quote(sh.root .. "/examples") .. " --exclude=node_modules "
      .. "--exclude=generated --exclude=.dhrun --exclude=dist -cf - datahub | tar -C " .. sh.quote(dir) .. " -xf -" })
    assert.are.equal(0, r.code, r.stderr)
    r = sh.dhrun({ "release", "--dry-run" }, { cwd = dir .. "/datahub", env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Regenerate the client\n[^\n]*would run", r.stdout)
    assert.matches("Build the application\n[^\n]*would run", r.stdout)
  end)
end)

describe("deploy --dry-run", function()
  it("plans generate when the real run would apply migrations, even with the schema unchanged", function()
    local t = dh.create("pre")
    finally(function() dh.drop(t) end)
    local sys = require "dhrun.core.sys"
    local cfg, dir = dh.config()
    sh.write(dir .. "/.dhrun/generate.sha256", sys.sha256(sh.read(dir .. "/schema.prisma")) .. "\n")
    local r = dh.flow(t, "deploy", { "--dry-run" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local gen = r.stdout:match("%[7/8%] Regenerate the client\n([^\n]*)")
    assert.matches("would run", gen, 1, true)
    -- and the real run does run it
    r = dh.flow(t, "deploy", {}, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.are.equal("generated\n", sh.read(dir .. "/generate.log"))
  end)
end)
