-- Test helper: what the helpers of the example projects (datahub.lua,
-- taskhub.lua) share: the project's seed, a test config built on the
-- project's own, its flows run as a user runs them, and its test databases
-- dropped.
local testdb = require "testdb"
local sh = require "sh"

local E = {}

-- name: the project's directory under examples/ (its seed SQL defines
-- pg_temp.<name>_seed(a, b)).  opts:
--   seed      the seed's default {a, b}
--   config    Lua text every test config runs after loading the project's
--   env       environment every flow gets besides DATABASE_URL
function E.project(name, opts)
  local M = {}
  M.root = sh.root
  M.example = sh.root .. "/examples/" .. name
  M.migrations = M.example .. "/prisma/migrations"

  -- Loads seed/seed.sql and adds data at the scale (a, b) it takes; returns
  -- the seed's summary.
  function M.seed(conn, a, b)
    conn:exec_script(assert(sh.read(M.example .. "/seed/seed.sql")))
    return conn:query_value(string.format("SELECT pg_temp.%s_seed($1, $2)", name), a or opts.seed[1],
      b or opts.seed[2])
  end

  -- A test config in `dir` (a new temp dir by default): the project's, with
  -- the paths made absolute and the schema copied beside it.  `overrides` is
  -- Lua text run before `return cfg`.  Returns its path and the dir.
  function M.config(dir, overrides)
    dir = dir or sh.tmpdir()
    sh.write(dir .. "/schema.prisma", sh.read(M.example .. "/prisma/schema.prisma"))
    local text = string.format([[
local cfg = dofile(%q)
cfg.migrations = %q
cfg.schema = "schema.prisma"
%s
%s
return cfg
]], M.example .. "/dhrun.config.lua", M.migrations, opts.config or "", overrides or "")
    return sh.write(dir .. "/dhrun.config.lua", text), dir
  end

  -- Runs a flow as a user would: dhrun NAME --config CFG ARGS..., with
  -- DATABASE_URL = t.url (which carries ?schema= when the test uses one).
  function M.flow(t, flow, args, o)
    o = o or {}
    local argv = { flow, "--config", o.config or M.config() }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    local env = { DATABASE_URL = t.url }
    for k, v in pairs(opts.env or {}) do env[k] = v end
    for k, v in pairs(o.env or {}) do env[k] = v end
    return sh.dhrun(argv, { cwd = sh.root, env = env, stdin = o.stdin })
  end

  function M.drop(t)
    if t.conn then t.conn:close() end
    testdb.drop(t.name)
  end

  return M
end

return E
