-- Scripts and configs are code that runs with the caller's rights: dhrun
-- refuses one that another user could have written (as it refuses such a
-- module), and a file in the working directory never stands in for a flow.
local sh = require "sh"

local function chmod(mode, path) assert.are.equal(0, sh.run({ "chmod", mode, path }).code) end

describe("trust", function()
  it("refuses a script that others can write, or one in a directory that others can write (exit 2)", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/scripts/hello.lua", 'print("hello")\n')
    local r = sh.dhrun({ "hello" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("hello\n", r.stdout)

    chmod("o+w", script)
    r = sh.dhrun({ "hello" }, { cwd = dir })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("refusing .*/scripts/hello%.lua: it must be a file owned by root or you and writable by nobody else",
      r.stderr)
    assert.matches("hint: a script is code that runs with your rights", r.stderr, 1, true)
    assert.are.equal("", r.stdout, "it did not run")
    chmod("o-w", script)

    chmod("g+w", dir .. "/scripts")
    r = sh.dhrun({ dir .. "/scripts/hello.lua" }, { cwd = dir })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("directory " .. dir .. "/scripts can be written by other users", r.stderr, 1, true)
    chmod("g-w", dir .. "/scripts")
  end)

  it("refuses a config file that others can write, before connecting (exit 2)", function()
    local dir = sh.tmpdir()
    local cfg = sh.write(dir .. "/dhrun.config.lua", "return { project = 'x' }\n")
    local script = sh.write(dir .. "/show.lua", [[
local flow = require("dhrun.flow").new { name = "show", db = false }
flow:step { title = "Show", run = function(ctx) return { summary = ctx.cfg.project } end }
return flow:run(...)
]])
    local r = sh.dhrun({ script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    chmod("go+w", cfg)
    r = sh.dhrun({ script }, { cwd = dir, env = { DATABASE_URL = "postgresql://nobody@127.0.0.1:1/x" } })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("refusing " .. cfg .. ": it must be a file owned by root or you", r.stderr, 1, true)
    assert.matches("the config is code", r.stderr, 1, true)
  end)

  it("a file in the working directory named like a flow does not replace the flow", function()
    local dir = sh.tmpdir()
    sh.write(dir .. "/deploy", 'print("not the deploy flow")\n')
    local r = sh.dhrun({ "deploy", "--help" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("usage: dhrun deploy", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("not the deploy flow", 1, true))
    -- a path says "this file"
    r = sh.dhrun({ "./deploy" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("not the deploy flow\n", r.stdout)
  end)
end)
