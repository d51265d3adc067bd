-- The example Data Hub config, pointed at the benchmark's database.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local cfg = dofile(here .. "/../examples/datahub/dhrun.config.lua")
cfg.database_url = os.getenv("BENCH_DATABASE_URL")
cfg.migrations = "../examples/datahub/prisma/migrations"
cfg.schema = "../examples/datahub/prisma/schema.prisma"
cfg.generated = nil
return cfg
