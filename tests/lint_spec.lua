-- Static checks that belong to the suite: the Lua code is luacheck-clean.
local sh = require "sh"

describe("lint", function()
  it("luacheck finds no warnings in stdlib/, scripts/, tests/", function()
    local dirs = {}
    for _, d in ipairs({ "stdlib", "scripts", "tests", "examples", "bench" }) do
      if require("lfs").attributes(sh.root .. "/" .. d, "mode") == "directory" then dirs[#dirs + 1] = d end
    end
    local argv = { "luacheck", "--no-color", "-q" }
    for _, d in ipairs(dirs) do argv[#argv + 1] = d end
    local r = sh.run(argv, { cwd = sh.root })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
  end)
end)
