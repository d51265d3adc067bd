-- dhrun.log: levels, where lines go, how they look on a terminal and off
-- it, colour switches, redaction, the log file and progress lines.  Output
-- is checked on a real dhrun subprocess; DHRUN_TTY decides whether it
-- formats for a terminal.
local sh = require "sh"

local ESC = "\27["
local STAMP = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"

-- Runs `code` (with `log` and `sys` in scope) in a fresh dhrun.  The
-- variables that change the output are set explicitly (empty = unset).
local function run(code, env, flags)
  local e = { DHRUN_TTY = "0", DHRUN_LOG_LEVEL = "", DHRUN_COLOR = "", NO_COLOR = "" }
  for k, v in pairs(env or {}) do e[k] = v end
  local argv = {}
  for _, f in ipairs(flags or {}) do argv[#argv + 1] = f end
  argv[#argv + 1] = "-e"
  argv[#argv + 1] = 'local log = require "dhrun.log"; local sys = require "dhrun.core.sys"\n' .. code
  return sh.dhrun(argv, { env = e })
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]*\n") do t[#t + 1] = l:sub(1, -2) end
  return t
end

-- The messages of timestamped lines, timestamps checked and removed.
local function messages(s)
  local t = {}
  for _, l in ipairs(lines(s)) do
    assert.matches("^" .. STAMP .. " ", l)
    t[#t + 1] = l:sub(26)
  end
  return t
end

local function plain(s)
  return (s:gsub("%p", "%%%0"))
end

describe("dhrun.log", function()
  describe("levels", function()
    local all = 'log.debug("d1") log.info("i1") log.ok("o1") log.warn("w1") log.error("e1")'

    it("shows info and above by default; debug/info/ok on stdout, warn/error on stderr", function()
      local r = run(all)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "INFO  i1", "OK    o1" }, messages(r.stdout))
      assert.are.same({ "WARN  w1", "ERROR e1" }, messages(r.stderr))
    end)

    it("filters with set_level and reports the level", function()
      local r = run([[
        assert(log.level() == "info")
        assert(log.set_level("warn") == "info")
        log.info("hidden") log.warn("w1")
        log.set_level("error") log.warn("hidden") log.error("e1")
        log.set_level("quiet") log.error("hidden")
        log.set_level("debug") log.debug("d1")
        print(log.level())
      ]])
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "WARN  w1", "ERROR e1" }, messages(r.stderr))
      local out = lines(r.stdout)
      assert.are.equal(2, #out)
      assert.matches(" DEBUG d1$", out[1])
      assert.are.equal("debug", out[2])
    end)

    it("turns on debug with -v or DHRUN_LOG_LEVEL=debug; DHRUN_LOG_LEVEL wins over -v", function()
      assert.are.same({ "DEBUG d1", "INFO  i1", "OK    o1" }, messages(run(all, nil, { "-v" }).stdout))
      assert.are.same({ "DEBUG d1", "INFO  i1", "OK    o1" }, messages(run(all, { DHRUN_LOG_LEVEL = "debug" }).stdout))
      local r = run(all, { DHRUN_LOG_LEVEL = "warn" }, { "-v" })
      assert.are.equal("", r.stdout)
      assert.are.same({ "WARN  w1", "ERROR e1" }, messages(r.stderr))
    end)

    it("warns about an unknown DHRUN_LOG_LEVEL and keeps the default", function()
      local r = run(all, { DHRUN_LOG_LEVEL = "loud" })
      assert.are.same({ "INFO  i1", "OK    o1" }, messages(r.stdout))
      assert.matches("WARN  DHRUN_LOG_LEVEL=loud is not a log level (debug, info, warn, error, quiet); using info",
        r.stderr, 1, true)
    end)

    it("rejects an unknown level name", function()
      local r = run('log.set_level("verbose")')
      assert.are.equal(2, r.code)
      assert.matches("bad argument #1 to 'set_level' (one of debug, info, warn, error, quiet expected, got verbose)",
        r.stderr, 1, true)
    end)
  end)

  describe("messages", function()
    it("uses string.format with arguments and prints a single argument verbatim", function()
      local r = run([[log.info("%d rows in %s", 42, "MetricDaily") log.info("100% done, %s %d left")]])
      assert.are.same({ "INFO  42 rows in MetricDaily", "INFO  100% done, %s %d left" }, messages(r.stdout))
    end)

    it("blames the caller for a bad format, at any level", function()
      local r = run('log.debug("%d rows", "many")')
      assert.are.equal(2, r.code)
      assert.matches("^dhrun: %(command line%):2: log.debug: "
        .. "bad argument #2 to '[%w.]*format' %(number expected, got string%)\n$", r.stderr)
    end)

    it("stamps every line of a multi-line message", function()
      local r = run('log.error("migration failed:\\nERROR: column \\"x\\" does not exist\\n")')
      assert.are.same({ "ERROR migration failed:", 'ERROR ERROR: column "x" does not exist' }, messages(r.stderr))
    end)
  end)

  describe("format", function()
    it("off a terminal: ISO-8601 UTC timestamp with milliseconds, level, no colour", function()
      local before = os.time()
      local r = run('log.info("hello") log.ok("ready") log.warn("careful")')
      local after = os.time()
      local out = lines(r.stdout)
      assert.matches("^" .. STAMP .. " INFO  hello$", out[1])
      assert.matches("^" .. STAMP .. " OK    ready$", out[2])
      assert.matches("^" .. STAMP .. " WARN  careful\n$", r.stderr)
      assert.is_nil(r.stdout:find(ESC, 1, true))
      assert.is_nil(r.stderr:find(ESC, 1, true))
      -- The timestamp is UTC and now.
      local y, mo, d, h, mi, s = out[1]:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)")
      local stamp = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = s })
      local utc_offset = os.time(os.date("*t", before)) - os.time(os.date("!*t", before))
      stamp = stamp + utc_offset
      assert.is_true(stamp >= before - 1 and stamp <= after + 1, out[1])
    end)

    it("on a terminal: no timestamp, colour by level, ✓ for ok", function()
      local r = run('log.debug("d") log.info("hello") log.ok("ready") log.warn("careful") log.error("broken")',
        { DHRUN_TTY = "1", DHRUN_LOG_LEVEL = "debug" })
      assert.are.equal(ESC .. "2mdebug: d" .. ESC .. "0m\n" .. "hello\n" .. ESC .. "32m✓ ready" .. ESC .. "0m\n",
        r.stdout)
      assert.are.equal(ESC .. "33mwarning: careful" .. ESC .. "0m\n" .. ESC .. "31merror: broken" .. ESC .. "0m\n",
        r.stderr)
    end)

    it("respects NO_COLOR and DHRUN_COLOR=never on a terminal", function()
      for _, env in ipairs({ { NO_COLOR = "1" }, { DHRUN_COLOR = "never" } }) do
        env.DHRUN_TTY = "1"
        local r = run('log.info("hello") log.ok("ready") log.warn("careful") log.error("broken")', env)
        assert.are.equal("hello\n✓ ready\n", r.stdout)
        assert.are.equal("warning: careful\nerror: broken\n", r.stderr)
        assert.is_nil((r.stdout .. r.stderr):find(ESC, 1, true))
      end
    end)

    it("forces colour with DHRUN_COLOR=always, even off a terminal and with NO_COLOR", function()
      local r = run('log.error("broken")', { DHRUN_COLOR = "always", NO_COLOR = "1" })
      assert.matches("^" .. STAMP .. " ERROR " .. plain(ESC) .. "31mbroken" .. plain(ESC) .. "0m\n$", r.stderr)
    end)

    it("keeps stdout and stderr lines in the order they were logged", function()
      local f = sh.tmpfile("order.lua", [[
        local log = require "dhrun.log"
        log.info("one") log.warn("two") log.info("three")
      ]])
      local r = sh.run({ "sh", "-c", sh.quote(sh.bin) .. " " .. sh.quote(f) .. " 2>&1" },
        { env = { DHRUN_TTY = "0" } })
      assert.are.same({ "INFO  one", "WARN  two", "INFO  three" }, messages(r.stdout))
    end)
  end)

  describe("secrets and the log file", function()
    it("redacts a registered secret on stdout, stderr and in the log file", function()
      local dir = sh.tmpdir()
      local r = run(string.format([[
        assert(log.secret("pa55-Word!x") == "pa55-Word!x")
        assert(log.secret(nil) == nil)
        assert(log.to_file(%q))
        log.info("connecting with %%s", "pa55-Word!x")
        log.error("auth failed for pa55-Word!x")
        local p = log.progress{label = "copy pa55-Word!x", total = 1}
        p:add() p:finish("pa55-Word!x")
      ]], dir .. "/run.log"), { DHRUN_TTY = "1" })
      assert.are.equal(0, r.code, r.stderr)
      local file = sh.read(dir .. "/run.log")
      for _, s in ipairs({ r.stdout, r.stderr, file }) do
        assert.is_nil(s:find("pa55", 1, true), s)
      end
      assert.matches("connecting with ***", r.stdout, 1, true)
      assert.matches("auth failed for ***", r.stderr, 1, true)
      assert.matches("INFO  connecting with ***\n", file, 1, true)
      assert.matches("ERROR auth failed for ***\n", file, 1, true)
    end)

    it("appends timestamped, uncoloured lines at the current level to the log file", function()
      local path = sh.tmpfile("app.log", "earlier run\n")
      local r = run(string.format([[
        assert(log.to_file(%q) == true)
        log.debug("not at info") log.info("hello") log.ok("ready") log.warn("careful")
        log.close_file()
        log.close_file()
        log.info("after close")
      ]], path), { DHRUN_TTY = "1", DHRUN_COLOR = "always" })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches(plain(ESC), r.stdout) -- the terminal got colour...
      local file = sh.read(path)
      assert.is_nil(file:find(ESC, 1, true)) -- ...the file did not
      local l = lines(file)
      assert.are.equal("earlier run", table.remove(l, 1))
      assert.are.same({ "INFO  hello", "OK    ready", "WARN  careful" }, messages(table.concat(l, "\n") .. "\n"))
    end)

    it("returns nil and a message when the log file cannot be opened", function()
      local r = run([[
        local ok, err = log.to_file("no/such/dir/run.log")
        print(ok, err)
      ]])
      assert.are.equal("nil\tcannot open log file no/such/dir/run.log: No such file or directory\n", r.stdout)
    end)
  end)

  describe("progress", function()
    it("prints done, total, percent, rate and ETA every interval, and the total at finish", function()
      local r = run([[
        local p = log.progress{label = "backfill MetricDaily", total = 1000, unit = "rows", interval = 0.1}
        for _ = 1, 10 do sys.sleep(0.03) p:add(100) end
        p:finish()
      ]])
      assert.are.equal(0, r.code, r.stderr)
      local m = messages(r.stdout)
      -- ~0.3 s at one line per 0.1 s: some lines, fewer than the 10 updates (+ finish)
      assert.is_true(#m >= 2 and #m < 11, r.stdout)
      for i = 1, #m - 1 do
        assert.matches("^INFO  backfill MetricDaily: [%d,]+/1,000 rows %(%d+%.%d%%%), [%d,.]+ rows/s, ETA [%d.]+s$",
          m[i])
      end
      assert.matches("^OK    backfill MetricDaily: done, 1,000 rows in 0%.%ds %([%d,.]+ rows/s%)$", m[#m])
    end)

    it("ends the line with the note a backfill gives it (batch size, what limits it)", function()
      local r = run([[
        local p = log.progress{label = "backfill Task", total = 1000, unit = "rows", interval = 0.05}
        p:note("batch 12,000, limited by replica lag")
        sys.sleep(0.06) p:add(100)
        p:note(nil)
        sys.sleep(0.06) p:add(100)
        p:finish()
      ]])
      assert.are.equal(0, r.code, r.stderr)
      local m = messages(r.stdout)
      assert.are.equal(3, #m, r.stdout)
      assert.matches("^INFO  backfill Task: 100/1,000 rows %(10%.0%%%), [%d,.]+ rows/s, ETA [%d.]+s, batch 12,000, "
        .. "limited by replica lag$", m[1])
      assert.matches("ETA [%d.]+s$", m[2])
    end)

    it("off a terminal prints nothing between intervals (default 10 s) but always the finish", function()
      local r = run([[
        local p = log.progress{label = "scan", unit = "rows"}
        for _ = 1, 1000 do p:add(1234) end
        p:finish("scanned")
      ]])
      local m = messages(r.stdout)
      assert.are.equal(1, #m, r.stdout)
      assert.matches("^OK    scan: scanned, 1,234,000 rows in %d+%.%ds %([%d,.]+ rows/s%)$", m[1])
    end)

    it("on a terminal redraws one line in place with \\r and clear-to-EOL", function()
      local r = run([[
        local p = log.progress{label = "backfill", total = 300, unit = "rows"}
        for _ = 1, 3 do sys.sleep(0.21) p:add(100) end
        log.info("meanwhile")
        p:finish()
      ]], { DHRUN_TTY = "1", NO_COLOR = "1" })
      assert.are.equal(0, r.code, r.stderr)
      local out = r.stdout
      -- Drawn at once, then each 0.2 s; erased around the log line.
      assert.matches("^\r\27%[Kbackfill: 0/300 rows %(0%.0%%%), 0%.0 rows/s, ETA unknown", out)
      assert.matches("\r\27%[Kbackfill: 100/300 rows %(33%.3%%%), [%d.,]+ rows/s, ETA [%d.]+s", out)
      assert.matches("\r\27%[Kmeanwhile\n\r\27%[Kbackfill: 300/300", out)
      assert.matches("\r\27%[K✓ backfill: done, 300 rows in 0%.%ds %([%d.,]+ rows/s%)\n$", out)
      assert.are.equal(2, select(2, out:gsub("\n", ""))) -- only the log line and the finish end a line
    end)

    it("fails on stderr with how far it got, also when a <close> scope is left by an error", function()
      local r = run([[
        local p = log.progress{label = "backfill", total = 1000, unit = "rows"}
        p:update(300)
        p:fail("connection lost")
        p:finish() -- no-op after fail
        local ok = pcall(function()
          local q <close> = log.progress{label = "copy", total = 10}
          q:add(4)
          error("disk full", 0)
        end)
        assert(not ok)
        print(pcall(p.add, p, 1))
      ]])
      assert.are.equal(0, r.code, r.stderr)
      local m = messages(r.stderr)
      assert.matches("^ERROR backfill: failed after 300/1,000 rows %(30%.0%%%) in 0%.%ds: connection lost$", m[1])
      assert.matches("^ERROR copy: failed after 4/10 items %(40%.0%%%) in 0%.%ds: disk full$", m[2])
      assert.are.equal(2, #m)
      assert.matches("^false\t.*progress 'backfill' already failed", r.stdout)
    end)
  end)
end)
