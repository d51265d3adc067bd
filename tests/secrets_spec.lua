-- Passwords reach no output, report or journal, from the first line a
-- script runs, wherever they come from.
local sh = require "sh"
local testdb = require "testdb"

describe("secrets", function()
  it("the environment's database password is masked from the start, before any connection", function()
    for _, case in ipairs({
      { { DATABASE_URL = "postgresql://app:Sup3r-s3cret@db.example.com/app" },
        "postgresql://app:***@db.example.com/app" },
      { { DATABASE_URL = "postgresql://app@db/app?password=Sup3r-s3cret&sslmode=require" },
        "postgresql://app@db/app?password=***&sslmode=require" },
      { { DATABASE_URL = "host=db password='Sup3r s3cret\\'x' user=app" }, "host=db password='***' user=app" },
      { { DATABASE_URL = "host=db password=Sup3r-s3cret user=app" }, "host=db password=*** user=app" },
    }) do
      local r = sh.dhrun({ "-e", "print(os.getenv('DATABASE_URL'))" }, { env = case[1] })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(case[2] .. "\n", r.stdout)
    end
    local r = sh.dhrun({ "-e", "print('pw is ' .. os.getenv('PGPASSWORD'))" },
      { env = { PGPASSWORD = "Sup3r-s3cret" } })
    assert.are.equal("pw is ***\n", r.stdout)
  end)

  it("a short password is masked where it stands as a word of its own, never inside other words", function()
    local r = sh.dhrun({ "-e", [[
print("permission denied for postgresql://u:p@db/x")
print(os.getenv("DATABASE_URL"))
print("password=p host=db, password='p'")
print("p")
print("stop at step p (up)")
]] }, { env = { DATABASE_URL = "postgresql://u:p@db/x" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("permission denied for postgresql://u:***@db/x\npostgresql://u:***@db/x\n"
      .. "password=*** host=db, password='***'\n***\nstop at step *** (up)\n", r.stdout)
  end)

  it("a password inside a flow's argument is masked in its output and in the journal", function()
    local t = testdb.create()
    local conn = t.connect()
    finally(function() conn:close(); testdb.drop(t.name) end)
    local script = sh.write(sh.tmpdir() .. "/ping.lua", [[
local flow = require("dhrun.flow").new { name = "ping", options = { { name = "url", arg = "URL" } } }
flow:step { title = "Ping", run = function(ctx) return { summary = "would call " .. ctx.args.url } end }
return flow:run(...)
]])
    local r = sh.dhrun({ script, "--url", "https://oncall:Hunter2-xyz@app.example.com/health" },
      { env = { DATABASE_URL = t.url } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("would call https://oncall:***@app.example.com/health", r.stdout, 1, true)
    assert.is_nil((r.stdout .. r.stderr):find("Hunter2", 1, true))
    local args = conn:query_value("SELECT args::text FROM dhrun.runs")
    assert.is_nil(args:find("Hunter2", 1, true), args)
    assert.matches("https://oncall:***@app.example.com/health", args, 1, true)
  end)
end)
