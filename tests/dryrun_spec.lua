-- The dry run is the plan on-call approves: for every flow and state, its
-- verdict for each step (would run / skipped and why / fails) must be what
-- the real run then does.
local cjson = require "cjson"
local sh = require "sh"
local dh = require "datahub"

local VERDICT = { planned = "runs", ok = "runs", skipped = "skipped", failed = "fails", interrupted = "fails" }

local function verdicts(path)
  local report = cjson.decode((assert(sh.read(path))))
  local out = {}
  for i, s in ipairs(report.steps) do
    local v = VERDICT[s.status] or s.status
    -- a failure's text may differ (a plan vs the real error); its place may not
    out[i] = s.title .. ": " .. v .. (v == "skipped" and (" (" .. tostring(s.reason) .. ")") or "")
  end
  return out, report
end

local CASES = {
  { "deploy", { "pre", "nullable", "half", "done", "rolled_back", "failed" }, { "--no-build" } },
  { "recover", { "failed", "rolled_back", "half", "done", "pre" }, { "--no-build" } },
  { "rollback", { "done", "rolled_back", "nullable" }, { "--yes" } },
}

describe("--dry-run", function()
  for _, case in ipairs(CASES) do
    local flow, states, args = case[1], case[2], case[3]
    for _, state in ipairs(states) do
      it(flow .. " from '" .. state .. "': each step's dry-run verdict is what the real run does", function()
        local t = dh.create(state)
        finally(function() dh.drop(t) end)
        local cfg, dir = dh.config()
        local dry_args = { "--dry-run", "--report-json", dir .. "/dry.json" }
        for _, a in ipairs(args) do dry_args[#dry_args + 1] = a end
        local before = dh.fingerprint(t.conn)
        local dry = dh.flow(t, flow, dry_args, { config = cfg })
        assert.are.equal(before, dh.fingerprint(t.conn), "the dry run changed nothing")
        local real_args = { "--report-json", dir .. "/real.json" }
        for _, a in ipairs(args) do real_args[#real_args + 1] = a end
        local real = dh.flow(t, flow, real_args, { config = cfg })
        assert.are.equal(real.code, dry.code, "the same exit code\ndry:\n" .. dry.stdout .. dry.stderr
          .. "\nreal:\n" .. real.stdout .. real.stderr)
        local want, got = verdicts(dir .. "/real.json"), verdicts(dir .. "/dry.json")
        assert.are.same(want, got)
      end)
    end
  end
end)

describe("the dry run's SQL preview", function()
  it("splits migrations as PostgreSQL does: a DO block is one statement, comments are left out", function()
    local t = dh.create("nullable")
    finally(function() dh.drop(t) end)
    local r = dh.flow(t, "deploy", { "--dry-run", "--no-build" })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("apply " .. dh.NOT_NULL .. " (5 statement(s); --verbose shows the file):", r.stdout, 1, true)
    assert.matches("  DO $$ DECLARE tbl text; has_null boolean;", r.stdout, 1, true)
    assert.matches('  ALTER TABLE "MetricDaily" ALTER COLUMN "workspaceId" SET NOT NULL;', r.stdout, 1, true)
    assert.is_nil(r.stdout:find("Warnings:", 1, true), "the /* */ comment is not shown as a statement")
    assert.is_nil(r.stdout:find("\n[^\n]*  has_null boolean;", 1), "no fragment of the DO block on its own")
  end)

  it("names the byte where PostgreSQL's scanner rejects a migration", function()
    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    local dir = sh.tmpdir()
    assert.are.equal(0, sh.run({ "cp", "-r", dh.migrations, dir .. "/migrations" }).code)
    sh.write(dir .. "/migrations/20991231000000_broken/migration.sql", "SELECT 1;\nSELECT $$never closed;\n")
    local cfg = dh.config(dir, 'cfg.migrations = "' .. dir .. '/migrations"')
    local r = dh.flow(t, "deploy", { "--dry-run", "--no-build" }, { config = cfg })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("apply 20991231000000_broken: PostgreSQL's scanner rejects it at byte 18: unterminated "
      .. "dollar-quoted string", r.stdout, 1, true)
  end)
end)
