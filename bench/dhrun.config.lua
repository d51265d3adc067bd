-- The example Data Hub config, pointed at the benchmark's database.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local cfg = dofile(here .. "/../examples/datahub/dhrun.config.lua")
cfg.database_url = os.getenv("BENCH_DATABASE_URL")
cfg.migrations = "../examples/datahub/prisma/migrations"
cfg.schema = "../examples/datahub/prisma/schema.prisma"
cfg.generated = nil
-- paths in a config are relative to its own directory
for i, p in ipairs(cfg.build_inputs or {}) do cfg.build_inputs[i] = "../examples/datahub/" .. p end
-- BENCH_BATCH: JSON merged into the rollout's batch settings (B1's adaptive runs)
local extra = os.getenv("BENCH_BATCH")
if extra and extra ~= "" then
  local r = cfg.rollouts and cfg.rollouts[1]
  r.batch = r.batch or {}
  for k, v in pairs(require("cjson").decode(extra)) do r.batch[k] = v end
end
return cfg
