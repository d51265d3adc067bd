-- `make install PREFIX=DIR` after a build that was made for another PREFIX
-- (build/ always exists after make test or make demo): the installed dhrun
-- finds its flows and modules where it is, at run time.
local sh = require "sh"
local dh = require "datahub"

describe("make install", function()
  it("into a fresh PREFIX gives a dhrun whose --list shows every flow and whose status works", function()
    local prefix = sh.tmpdir() .. "/prefix"
    local build = sh.bin:match("^(.*)/[^/]*$")
    -- install what is built (-o all: never rebuild the binary under test), with
    -- no flags inherited from a make that runs this suite (make asan)
    local r = sh.run({ "make", "--no-print-directory", "-o", "all", "-C", sh.root, "BUILD=" .. build,
      "PREFIX=" .. prefix, "install" }, { env = { MAKEFLAGS = false, MAKELEVEL = false, MFLAGS = false } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    local bin = prefix .. "/bin/dhrun"
    local elsewhere = sh.tmpdir()
    r = sh.run({ bin, "--list" }, { cwd = elsewhere })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("^" .. prefix:gsub("%p", "%%%0") .. "/bin/%.%./share/dhrun/scripts:\n", r.stdout)
    for _, flow in ipairs({ "backfill", "check", "deploy", "recover", "release", "resolve", "rollback", "status" }) do
      assert.matches("\n  " .. flow .. "\n", r.stdout, 1, true)
    end

    local t = dh.create("done")
    finally(function() dh.drop(t) end)
    r = sh.run({ bin, "status", "--no-build", "--config", (dh.config()) },
      { cwd = elsewhere, env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("Database schema is up to date!", r.stdout, 1, true)
  end)

  it("a dhrun with no flows anywhere says where it looked (exit 1), never an empty list", function()
    local dir = sh.tmpdir()
    assert.are.equal(0, sh.run({ "mkdir", "-p", dir .. "/bin" }).code)
    assert.are.equal(0, sh.run({ "cp", sh.bin, dir .. "/bin/dhrun" }).code)
    local r = sh.run({ dir .. "/bin/dhrun", "--list" }, { cwd = dir, env = { DHRUN_PATH = false } })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.are.equal("", r.stdout)
    assert.matches("^dhrun: no flows found in %./scripts, ", r.stderr)
  end)
end)

describe("a misspelt flow name", function()
  it("gets a did-you-mean, like options and config keys", function()
    local r = sh.dhrun({ "deplyo" }, { cwd = sh.tmpdir() })
    assert.are.equal(2, r.code)
    assert.are.equal("dhrun: no flow 'deplyo' (did you mean 'deploy'?)\ndhrun: hint: dhrun --list shows the flows "
      .. "there are\n", r.stderr)
  end)
end)
