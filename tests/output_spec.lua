-- What dhrun does when its own output cannot be written: like coreutils, a
-- failure with one line on stderr, never a silent exit 0.
local sh = require "sh"

local function dhrun_to(target, args, extra)
  local words = { sh.quote(sh.bin) }
  for _, a in ipairs(args) do words[#words + 1] = sh.quote(a) end
  return sh.run({ "sh", "-c", table.concat(words, " ") .. " > " .. target .. (extra or "") }, { cwd = sh.root })
end

describe("output that cannot be written", function()
  it("standard output on a full disk: exit 1 and one line saying so", function()
    local r = dhrun_to("/dev/full", { "-e", "print(('x'):rep(100000))" })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal("dhrun: cannot write to standard output: write error\n", r.stderr)
    r = dhrun_to("/dev/full", { "-e", "print('x') os.exit(0)" })
    assert.are.equal(1, r.code, r.stderr)
    assert.are.equal("dhrun: cannot write to standard output: No space left on device\n", r.stderr)
    -- a failure keeps its own code
    r = dhrun_to("/dev/full", { "-e", "print('x') os.exit(3)" })
    assert.are.equal(3, r.code, r.stderr)
    r = dhrun_to("/dev/null", { "-e", "print('x')" })
    assert.are.equal(0, r.code, r.stderr)
  end)

  it("a report path that is a directory is refused before the flow runs (exit 2)", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/noop.lua", [[
local flow = require("dhrun.flow").new { name = "noop", config = false, db = false }
flow:step { title = "Nothing", run = function() return { summary = "done" } end }
return flow:run(...)
]])
    local r = sh.dhrun({ script, "--report-json", dir }, { cwd = dir })
    assert.are.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("that is a directory; give a file name", r.stderr, 1, true)
    assert.are.equal("", r.stdout)
  end)

  it("a report that cannot be written at the end fails the run instead of a warning and exit 0", function()
    local dir = sh.tmpdir()
    local out = dir .. "/reports"
    sh.write(out .. "/.keep", "")
    local script = sh.write(dir .. "/noop.lua", string.format([[
local flow = require("dhrun.flow").new { name = "noop", config = false, db = false }
flow:step { title = "Remove the report directory", run = function()
  os.remove(%q); assert(os.remove(%q)); return { summary = "removed" } end }
return flow:run(...)
]], out .. "/.keep", out))
    local r = sh.dhrun({ script, "--report-json", out .. "/r.json" }, { cwd = dir })
    assert.are.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("could not write the report: cannot write report " .. out .. "/r.json", r.stderr, 1, true)
  end)
end)

describe("report files", function()
  local report = require "dhrun.report"
  local lfs = require "lfs"

  it("are written through a new 0600 file with a random name: a planted symlink is never followed", function()
    local dir = sh.tmpdir()
    local victim = sh.write(dir .. "/victim.txt", "keep me\n")
    -- where the old scheme wrote (PATH.tmp), an attacker's link to the victim
    assert(os.execute("ln -s " .. sh.quote(victim) .. " " .. sh.quote(dir .. "/r.json.tmp")))
    report.write_json(dir .. "/r.json", { ok = true })
    assert.are.equal("keep me\n", sh.read(victim))
    assert.are.equal("rw-------", lfs.attributes(dir .. "/r.json", "permissions"))
    assert.matches('"ok": true', sh.read(dir .. "/r.json"), 1, true)
    local names = {}
    for f in lfs.dir(dir) do if f ~= "." and f ~= ".." then names[#names + 1] = f end end
    table.sort(names)
    assert.are.same({ "r.json", "r.json.tmp", "victim.txt" }, names, "no temporary file left behind")
  end)

  it("sys.mkstemp and sys.mkdtemp create new entries with random names, private to the user", function()
    local sys = require "dhrun.core.sys"
    local dir = sh.tmpdir()
    local f1, p1 = sys.mkstemp(dir .. "/x.XXXXXX")
    local f2, p2 = sys.mkstemp(dir .. "/x.XXXXXX")
    assert.is_truthy(f1 and f2)
    assert.are_not.equal(p1, p2)
    assert(f1:write("one"))
    assert(f1:close())
    f2:close()
    assert.are.equal("one", sh.read(p1))
    assert.are.equal("rw-------", lfs.attributes(p2, "permissions"))
    local d = assert(sys.mkdtemp(dir .. "/d.XXXXXX"))
    assert.are.equal("rwx------", lfs.attributes(d, "permissions"))
    local nf, err = sys.mkstemp(dir .. "/no-such-dir/x.XXXXXX")
    assert.is_nil(nf)
    assert.matches("No such file or directory", err, 1, true)
    assert.has_error(function() sys.mkstemp(dir .. "/x") end)
  end)
end)

describe("a child's output streamed line by line", function()
  local process = require "dhrun.process"

  it("passes a line with no end on in bounded pieces, and keeps only what a terminal shows of a \\r line", function()
    local got, total = {}, 0
    local r = process.run({ "sh", "-c", "printf 'crlf\\r\\nbar 10%%\\rbar 50%%\\rbar 100%%\\n'; "
      .. "head -c 20000000 /dev/zero | tr '\\0' x; printf '\\nlast'" },
      { on_line = function(_, line) got[#got + 1] = line; total = total + #line end })
    assert.is_true(r.ok)
    assert.are.equal("crlf", got[1])
    assert.are.equal("bar 100%", got[2])
    assert.are.equal("last", got[#got])
    local longest = 0
    for i = 3, #got - 1 do longest = math.max(longest, #got[i]) end
    assert.are.equal(process.MAX_LINE, longest, "no piece is longer than MAX_LINE")
    assert.are.equal(20000000, total - #"crlf" - #"bar 100%" - #"last", "every byte passed on once")
    assert.are.equal(math.ceil(20000000 / process.MAX_LINE), #got - 3)
  end)
end)

describe("control characters from outside", function()
  it("log lines show them escaped: no terminal title, no cleared screen, no forged line", function()
    local r = sh.dhrun({ "-e", [[
local log = require "dhrun.log"
log.info("applying %s", "evil\27]0;pwned\7\n2026-01-01T00:00:00.000Z OK    forged")
log.error("FAILED: %s", "[42P01] relation \27[2J\194\155 does not exist")
log.info("plan:\n  line two\27[31m")
]] }, { cwd = sh.root })
    assert.are.equal(0, r.code, r.stderr)
    local all = r.stdout .. r.stderr
    assert.is_nil(all:find("\27", 1, true), "no ESC byte reaches the terminal")
    assert.is_nil(all:find("\7", 1, true))
    assert.is_nil(all:find("\194\155", 1, true), "no C1 control either")
    assert.matches("applying evil\\x1b]0;pwned\\x07\\x0a2026-01-01T00:00:00.000Z OK    forged", r.stdout, 1, true)
    assert.matches("relation \\x1b[2J\\u{9b} does not exist", r.stderr, 1, true)
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(3, #lines, "a value never starts a line of its own; a message's own lines stay lines")
    assert.matches("line two\\x1b[31m", r.stdout, 1, true)
  end)

  it("an error message the host prints shows them escaped too", function()
    local r = sh.dhrun({ "-e", [[require("dhrun.errors").config("bad name \27[2Jx\nforged", "fix \27]0;t\7")]] },
      { cwd = sh.root })
    assert.are.equal(2, r.code)
    assert.are.equal("dhrun: bad name \\x1b[2Jx\n  forged\ndhrun: hint: fix \\x1b]0;t\\x07\n", r.stderr)
  end)

  it("a child's streamed output shows them escaped", function()
    local code = [[require("dhrun.process").run({ "printf", "a\27[2Jb\n" }, { stream = true, prefix = "| " })]]
    local r = sh.dhrun({ "-e", code }, { cwd = sh.root })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("| a\\x1b[2Jb\n", r.stdout)
  end)
end)

describe("wording", function()
  it("an interrupted step says so once: 'interrupted (Ctrl-C)', not 'interrupted (interrupted (Ctrl-C))'", function()
    local dir = sh.tmpdir()
    local script = sh.write(dir .. "/stop.lua", [[
local flow = require("dhrun.flow").new { name = "stop", config = false, db = false }
flow:step { title = "Wait", run = function()
  error(require("dhrun.errors").new("interrupted", "interrupted (Ctrl-C)"), 0) end }
return flow:run(...)
]])
    local r = sh.dhrun({ script }, { cwd = dir })
    assert.are.equal(130, r.code, r.stdout .. r.stderr)
    assert.matches("ERROR       interrupted (Ctrl-C)\n", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("interrupted (interrupted", 1, true))
  end)

  it("a finished progress line gives the count, never 'count/estimate'", function()
    local r = sh.dhrun({ "-e", [[
local p = require("dhrun.log").progress { label = "backfill T (pass 2)", total = 88, unit = "rows" }
p:update(99)
p:finish("all updated")]] }, { cwd = sh.root })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("OK    backfill T %(pass 2%): all updated, 99 rows in [%d.]+s %(", r.stdout)
    assert.is_nil(r.stdout:find("99/88", 1, true))
  end)
end)

describe("the progress ETA", function()
  it("is within 30% of the real remaining time at 25%, after a slow start (deterministic clock)", function()
    local log = require "dhrun.log"
    local now = 0
    local p = log.progress { label = "eta test", total = 2000000, unit = "rows", interval = 1e9,
      clock = function() return now end }
    -- a slow start: 20 s at 5,000 rows/s in 0.5 s batches (a busy machine, small first batches)
    local done = 0
    while now < 20 do
      now, done = now + 0.5, done + 2500
      p:update(done)
    end
    -- then the steady rate: 40,000 rows/s in batches of 10,000 that take 0.2 or 0.3 s
    local i, eta_at_25, t_at_25 = 0, nil, nil
    while done < 2000000 do
      i = i + 1
      local dt = i % 2 == 0 and 0.2 or 0.3
      now, done = now + dt, math.min(2000000, done + 10000)
      p:update(done)
      if not eta_at_25 and done >= 500000 then eta_at_25, t_at_25 = p:eta(), now end
    end
    local real = now - t_at_25
    assert.is_true(math.abs(eta_at_25 - real) / real <= 0.3,
      string.format("ETA %.1f s at 25%% against %.1f s to go", eta_at_25, real))
    -- the old average over the whole run would have said
    local cumulative = (2000000 - 500000) / (500000 / t_at_25)
    assert.is_true(cumulative > 2 * real, "the case is one where a plain average is far off")
    p:finish()
  end)

  it("says 'ETA unknown' only until the first update", function()
    local log = require "dhrun.log"
    local now = 0
    local p = log.progress { label = "x", total = 100, unit = "rows", clock = function() return now end }
    assert.is_nil(p:eta())
    now = 4.6
    p:update(10)
    assert.are.equal(41.4, math.floor(p:eta() * 10 + 0.5) / 10)
    p:finish()
  end)
end)
