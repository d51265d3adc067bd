-- The layering, checked on the source so that it stays true without anyone
-- having to remember it:
--   scripts/ -> recipes (stdlib/recipes) -> core (stdlib/core) -> C host
-- Core modules, and the C host, never require a recipe; and nothing outside
-- examples/ knows the example app's words.
local sh = require "sh"
local lfs = require "lfs"

local function lua_files(dir)
  local out = {}
  for f in lfs.dir(sh.root .. "/" .. dir) do
    if f:match("%.lua$") then out[#out + 1] = dir .. "/" .. f end
  end
  table.sort(out)
  return out
end

-- Module names a Lua file requires: require "x", require("x"), require 'x'.
local function requires(path)
  local text = assert(sh.read(sh.root .. "/" .. path))
  local out = {}
  for name in text:gmatch("require%s*%(?%s*[\"']([%w%._]+)[\"']") do out[#out + 1] = name end
  return out
end

local function module_of(path) return "dhrun." .. path:match("([^/]+)%.lua$") end

local core, recipes = lua_files("stdlib/core/dhrun"), lua_files("stdlib/recipes/dhrun")
local recipe_names = {}
for _, p in ipairs(recipes) do recipe_names[module_of(p)] = p end

describe("layering", function()
  it("finds the core modules and the recipes where the README says they are", function()
    local names = {}
    for _, p in ipairs(core) do names[#names + 1] = module_of(p) end
    for _, want in ipairs({ "dhrun.db", "dhrun.process", "dhrun.http", "dhrun.log", "dhrun.report", "dhrun.config",
      "dhrun.flow", "dhrun.journal", "dhrun.errors" }) do
      assert.is_truthy(table.concat(names, " "):find(want, 1, true), want .. " is a core module")
    end
    for _, want in ipairs({ "dhrun.prisma", "dhrun.rollout", "dhrun.tenancy", "dhrun.release" }) do
      assert.is_truthy(recipe_names[want], want .. " is a recipe")
    end
  end)

  it("core modules never require a recipe", function()
    local offenders = {}
    for _, p in ipairs(core) do
      for _, name in ipairs(requires(p)) do
        if recipe_names[name] then offenders[#offenders + 1] = p .. " requires " .. name end
      end
    end
    assert.are.same({}, offenders)
  end)

  it("the C host and its modules never load a recipe", function()
    local offenders = {}
    for f in lfs.dir(sh.root .. "/runtime") do
      if f:match("%.[ch]$") then
        local text = assert(sh.read(sh.root .. "/runtime/" .. f))
        for name in pairs(recipe_names) do
          if text:find('"' .. name .. '"', 1, true) then offenders[#offenders + 1] = f .. " names " .. name end
        end
      end
    end
    assert.are.same({}, offenders)
  end)

  it("the check itself sees a core module that requires a recipe", function()
    -- the scan is only worth something if it can fail
    local dir = sh.tmpdir()
    sh.write(dir .. "/bad.lua", 'local prisma = require("dhrun.prisma")\nlocal r = require "dhrun.release"\n')
    local found = {}
    for name in assert(sh.read(dir .. "/bad.lua")):gmatch("require%s*%(?%s*[\"']([%w%._]+)[\"']") do
      if recipe_names[name] then found[#found + 1] = name end
    end
    assert.are.same({ "dhrun.prisma", "dhrun.release" }, found)
  end)

  it("nothing outside examples/ knows the example app's words", function()
    local hits = {}
    for _, dir in ipairs({ "stdlib/core/dhrun", "stdlib/recipes/dhrun", "scripts" }) do
      for _, p in ipairs(lua_files(dir)) do
        local n = 0
        for line in assert(sh.read(sh.root .. "/" .. p)):gmatch("[^\n]*") do
          n = n + 1
          local low = line:lower()
          -- its words, and the table names no other schema would have
          if low:find("workspace", 1, true) or low:find("datahub", 1, true) or low:find("data hub", 1, true)
              or low:find("metricdaily", 1, true) or low:find("chatmessage", 1, true) then
            hits[#hits + 1] = p .. ":" .. n .. ": " .. line
          end
        end
      end
    end
    assert.are.same({}, hits)
  end)
end)
