-- The second example project, Task Hub, end to end: its organizationId
-- rollout is only a config table (`rollouts`), run by the generic flows
-- (dhrun NAME --config ... as a real subprocess) in a PostgreSQL schema other
-- than public (?schema=tracker in DATABASE_URL).
local th = require "taskhub"
local prisma = require "dhrun.prisma"

local SCHEMA = "tracker"

-- Runs a flow, checks its exit code, and that nothing it printed names the
-- other example (the flows must be generic).
local function run(t, cfg, name, args, code)
  local r = th.flow(t, name, args, { config = cfg })
  local out = r.stdout .. r.stderr
  assert.are.equal(code, r.code, out)
  assert.is_nil(out:lower():find("workspace", 1, true), "dhrun " .. name .. " mentions 'workspace':\n" .. out)
  return out, r
end

local function nulls(conn)
  local n = 0
  for _, name in ipairs(th.TABLES) do
    n = n + conn:query_value('SELECT count(*) FROM "' .. name .. '" WHERE "organizationId" IS NULL')
  end
  return n
end

-- The rollout's rows: every table but the two that prepare may add to.
local function data_counts(conn)
  local c = th.counts(conn)
  c.Organization, c.Membership = nil, nil
  return c
end

-- The final state of the rollout, on t.conn (search_path = tracker).
local function assert_final(conn, counts)
  assert.are.equal(4, th.not_null_columns(conn), "organizationId NOT NULL on the four tables")
  assert.are.equal("up_to_date", prisma.status(conn, th.migrations).state)
  local total, per = th.rule_violations(conn)
  assert.are.equal(0, total, "rows off the backfill rule: " .. require("cjson").encode(per))
  assert.are.equal(0, th.users_without_org(conn), "every user owns an organization")
  if counts then assert.are.same(counts, data_counts(conn), "no row lost or added") end
  assert.are.equal(0, conn:query_value([[SELECT count(*) FROM pg_constraint c
      JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = current_schema() AND c.contype = 'c']]), "no helper CHECK constraint left behind")
end

describe("the Task Hub example (declarative rollout, schema " .. SCHEMA .. ")", function()
  it("deploys from empty and from seeded data, recovers a failed NOT NULL, rolls back and deploys again", function()
    local cfg = th.config()

    -- An empty database: deploy applies all four migrations, in the tracker schema.
    local e = th.create("empty", { schema = SCHEMA })
    finally(function() th.drop(e) end)
    local out = run(e, cfg, "deploy", {}, 0)
    for _, name in ipairs(th.MIGRATIONS) do assert.matches("applying " .. name, out, 1, true) end
    out = run(e, cfg, "status", {}, 0)
    assert.matches("Database schema is up to date!", out, 1, true)
    assert.are.same(th.MIGRATIONS, (function()
      local names = {}
      for _, row in ipairs(e.conn:query([[SELECT migration_name FROM _prisma_migrations
          WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name]])) do
        names[#names + 1] = row.migration_name
      end
      return names
    end)())
    assert.are.equal(4, th.not_null_columns(e.conn))
    assert.are.equal(0, e.conn:query_value([[SELECT count(*) FROM pg_tables WHERE schemaname = 'public']]),
      "nothing created in public")
    assert.are.equal("up_to_date", prisma.status(e.conn, th.migrations).state)

    -- A seeded database before the rollout: deploy runs the whole rollout.
    local t = th.create("pre", { schema = SCHEMA })
    finally(function() th.drop(t) end)
    local counts = data_counts(t.conn)
    local orgs_before = th.counts(t.conn).Organization
    local without = th.users_without_org(t.conn)
    assert.is_true(without > 0, "the seed has users who own no organization")
    out = run(t, cfg, "deploy", {}, 0)
    for _, s in ipairs({ "Task Hub", th.LABEL, th.NULLABLE, th.INDEXES, th.NOT_NULL }) do
      assert.matches(s, out, 1, true)
    end
    assert_final(t.conn, counts)
    assert.are.equal(without, th.personal_orgs(t.conn), "one personal organization per user who owned none")
    assert.are.equal(orgs_before + without, th.counts(t.conn).Organization)
    assert.are.equal(0, t.conn:query_value([[SELECT count(*) FROM pg_tables WHERE schemaname = 'public']]),
      "nothing created in public")

    out = run(t, cfg, "status", {}, 0)
    assert.matches("Database schema is up to date!", out, 1, true)

    -- A failed NOT NULL migration, made by hand: roll back, let NULLs back in
    -- (and new users and rows, as the app would write them), then apply the
    -- migration as Prisma would: it fails and leaves Prisma's failed row.
    run(t, cfg, "rollback", { "--yes" }, 0)
    assert.are.equal(0, th.not_null_columns(t.conn))
    t.conn:exec([[UPDATE "Task" SET "organizationId" = NULL WHERE id % 10 = 0]])
    t.conn:exec([[UPDATE "Comment" SET "organizationId" = NULL
      WHERE id IN (SELECT id FROM "Comment" ORDER BY id LIMIT 100)]])
    t.conn:exec([[UPDATE "AuditEvent" SET "organizationId" = NULL WHERE "taskId" IS NULL OR id % 7 = 0]])
    th.seed(t.conn, 5, 100)
    assert.is_true(th.users_without_org(t.conn) > 0, "new users who own no organization")
    counts = data_counts(t.conn)
    local null_rows = nulls(t.conn)
    assert.is_true(null_rows > 0)
    assert.is_false(pcall(prisma.deploy, t.conn, th.migrations), "the NOT NULL migration fails on the NULLs")
    assert.are.equal(1, t.conn:query_value([[SELECT count(*) FROM _prisma_migrations
      WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL]], th.NOT_NULL))
    assert.are.equal("failed", prisma.status(t.conn, th.migrations).state)

    -- deploy refuses and points at recover, changing nothing
    local refused
    out, refused = run(t, cfg, "deploy", {}, 1)
    assert.matches(th.NOT_NULL, out, 1, true)
    assert.matches("dhrun recover", refused.stderr, 1, true)
    assert.are.equal(null_rows, nulls(t.conn))
    assert.are.equal(0, th.not_null_columns(t.conn))

    -- recover: resolves the failed row, backfills, checks, deploys
    run(t, cfg, "recover", {}, 0)
    assert_final(t.conn, counts)
    local rows = t.conn:query([[SELECT finished_at IS NOT NULL AS fin, rolled_back_at IS NOT NULL AS rb
      FROM _prisma_migrations WHERE migration_name = $1 ORDER BY started_at]], th.NOT_NULL)
    assert.is_true(#rows >= 2)
    assert.is_true(rows[#rows].fin and not rows[#rows].rb, "the last row is a genuine applied row")
    for i = 1, #rows - 1 do assert.is_true(rows[i].rb, "earlier rows are rolled back") end

    -- the emergency rollback: the columns are nullable again, the data untouched
    run(t, cfg, "rollback", { "--yes" }, 0)
    assert.are.equal(0, th.not_null_columns(t.conn))
    assert.are.equal(0, (th.rule_violations(t.conn)))

    -- and deploy (naming the rollout, as with several) brings it back to the final state
    run(t, cfg, "deploy", { "--rollout", th.ROLLOUT }, 0)
    assert_final(t.conn, counts)
  end)
end)
