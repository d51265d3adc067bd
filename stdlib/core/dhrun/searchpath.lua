-- dhrun.searchpath: the flows on the search path (./scripts, $DHRUN_PATH,
-- the flows installed with dhrun), for `dhrun --list` and for "did you mean"
-- when a flow name is misspelt.
local lfs = require "lfs"
local sys = require "dhrun.core.sys"

local M = {}

function M.dirs()
  local list = {}
  for i, d in ipairs(sys.options().search_path or { "./scripts" }) do list[i] = d end
  return list
end

-- { {dir=, names={...}}, ... }: each flow name once, where it is found first.
function M.flows()
  local out, seen = {}, {}
  for _, d in ipairs(M.dirs()) do
    if lfs.attributes(d, "mode") == "directory" then
      local names = {}
      for f in lfs.dir(d) do
        local n = f:match("^(.+)%.lua$")
        if n and not seen[n] then
          seen[n] = true
          names[#names + 1] = n
        end
      end
      table.sort(names)
      if #names > 0 then out[#out + 1] = { dir = d, names = names } end
    end
  end
  return out
end

-- Prints the list; when it is empty, says where dhrun looked and returns
-- false (dhrun --list then exits 1).
function M.print_list()
  local flows = M.flows()
  for _, f in ipairs(flows) do
    print(f.dir .. ":")
    for _, n in ipairs(f.names) do print("  " .. n) end
  end
  if #flows == 0 then
    io.stderr:write("dhrun: no flows found in ", table.concat(M.dirs(), ", "),
      "\ndhrun: hint: run dhrun from a project with a scripts/ directory, set DHRUN_PATH, or reinstall dhrun "
      .. "(make install PREFIX=...)\n")
    return false
  end
  return true
end

-- The flow name closest to `name`, for "did you mean", or nil.
function M.suggest(name)
  local known = {}
  for _, f in ipairs(M.flows()) do
    for _, n in ipairs(f.names) do known[n] = true end
  end
  return require("dhrun.config").suggest(name, known)
end

return M
