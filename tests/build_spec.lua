-- The build's own messages: what a new user sees from `make` on a machine
-- that lacks the packages (simulated by naming one that does not exist).
local sh = require "sh"

describe("make", function()
  it("names the missing packages in one line and points at make deps, instead of a compiler error", function()
    local build = sh.tmpdir() .. "/build"
    local r = sh.run({ "make", "--no-print-directory", "-C", sh.root, "BUILD=" .. build,
      "BUILD_PKGS=dhrun-no-such-package libpq-dev" },
      { env = { MAKEFLAGS = false, MAKELEVEL = false, MFLAGS = false } }) -- not make asan's flags
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    local lines = {}
    for line in r.stderr:gmatch("[^\n]+") do
      if not line:match("^make[%[%d%]]*: %*%*%*") then lines[#lines + 1] = line end -- make's own "Error 2" line
    end
    assert.are.same({ "make: cannot build: missing Debian packages: dhrun-no-such-package "
      .. "(run make deps, which installs them)" }, lines)
    assert.is_nil(r.stdout:find("CC ", 1, true), "nothing was compiled")
  end)
end)

describe("tests/run.sh", function()
  it("fails a run that exceeds its deadline with a clear message, instead of hanging until killed", function()
    local dir = sh.tmpdir()
    local spec = sh.write(dir .. "/hang_spec.lua", [[
describe("a hanging test", function()
  it("waits forever", function() require("dhrun.core.sys").sleep(600) end)
end)
]])
    local r = sh.run({ sh.root .. "/tests/run.sh", spec }, { cwd = sh.root,
      env = { DHRUN = sh.bin, DHRUN_TEST_DEADLINE = "5", DHRUN_TEST_TMP = false } })
    assert.are_not.equal(0, r.code)
    assert.matches("tests: the suite did not finish within its deadline of 5 s (DHRUN_TEST_DEADLINE)", r.stdout, 1,
      true)
    assert.matches("FAIL  a hanging test waits forever", r.stdout, 1, true)
    assert.matches("\n%d+ passed, [1-9]%d* failed\n$", r.stdout)
  end)
end)
