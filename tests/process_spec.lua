-- dhrun.process: real child processes, no mocks.
local sh = require "sh"
local sys = require "dhrun.core.sys"
local process = require "dhrun.process"

-- true while pid exists and is not a zombie (PID 1 may never reap orphans)
local function running(pid)
  local stat = sh.read("/proc/" .. tostring(pid) .. "/stat")
  return stat ~= nil and stat:match("%) (%a)") ~= "Z"
end

-- Like running(), but a process SIGKILLed a moment ago (kill() does not
-- wait for the exit to complete) gets 1 s to finish dying.
local function alive(pid)
  local deadline = sys.now() + 1
  while running(pid) do
    if sys.now() > deadline then return true end
    sys.sleep(0.01)
  end
  return false
end

-- Waits up to `secs` for a file to have content; returns it.
local function wait_for_file(path, secs)
  local deadline = sys.now() + (secs or 5)
  repeat
    local s = sh.read(path)
    if s and s:find("\n") then return s end
    sys.sleep(0.02)
  until sys.now() > deadline
  error("timed out waiting for " .. path)
end

local function pid_in(path) return tonumber(wait_for_file(path):match("%d+")) end

describe("process.run", function()
  it("reports exit codes 0, 1 and 42", function()
    local r = process.run({ "true" })
    assert.are.same({ true, 0, nil, "", "" }, { r.ok, r.code, r.signal, r.stdout, r.stderr })
    r = process.run({ "false" })
    assert.are.same({ false, 1 }, { r.ok, r.code })
    r = process.run({ "sh", "-c", "echo out; echo err >&2; exit 42" })
    assert.are.same({ false, 42, "out\n", "err\n" }, { r.ok, r.code, r.stdout, r.stderr })
    assert.is_nil(r.error)
    assert.is_true(r.pid > 0)
    assert.are.equal("sh", r.argv[1])
  end)

  it("reports a child killed by a signal", function()
    local r = process.run({ "sh", "-c", "kill -9 $$" })
    assert.is_false(r.ok)
    assert.is_nil(r.code)
    assert.are.equal(9, r.signal)
    assert.are.equal("SIGKILL", r.signame)
  end)

  it("does not raise when the program is missing or not executable", function()
    local r = process.run({ "dhrun-no-such-program", "x" })
    assert.are.same({ false, 127, "cannot run 'dhrun-no-such-program': not found in PATH" },
      { r.ok, r.code, r.error })
    local f = sh.tmpfile("not-exec.sh", "#!/bin/sh\necho hi\n")
    r = process.run({ f })
    assert.are.same({ false, 126, "cannot run '" .. f .. "': Permission denied" }, { r.ok, r.code, r.error })
    r = process.run({ "/nonexistent/prog" })
    assert.are.same({ 127, "cannot run '/nonexistent/prog': No such file or directory" }, { r.code, r.error })
  end)

  it("runs in cwd and reports a missing cwd", function()
    local dir = sys.realpath(sh.tmpdir())
    assert.are.equal(dir .. "\n", process.run({ "pwd", "-P" }, { cwd = dir }).stdout)
    local r = process.run({ "pwd" }, { cwd = dir .. "/nope" })
    assert.are.same({ false, 126, "cannot run 'pwd': cwd " .. dir .. "/nope: No such file or directory" },
      { r.ok, r.code, r.error })
  end)

  it("adds, removes and inherits environment variables", function()
    local inherited = assert(os.getenv("PGHOST"))
    assert(os.getenv("PGPORT"))
    local r = process.run({ "sh", "-c", 'echo "$DHRUN_T_A|${PGPORT-unset}|$PGHOST"' },
      { env = { DHRUN_T_A = "a b", PGPORT = false } })
    assert.are.equal("a b|unset|" .. inherited .. "\n", r.stdout)
    -- the PATH given in env is the one searched
    local dir = sh.tmpdir()
    sh.write(dir .. "/dhrun-t-prog", "#!/bin/sh\necho found me\n")
    assert(process.run({ "chmod", "+x", dir .. "/dhrun-t-prog" }).ok)
    r = process.run({ "dhrun-t-prog" }, { env = { PATH = dir .. ":/usr/bin:/bin" } })
    assert.are.equal("found me\n", r.stdout)
  end)

  it("feeds stdin, also more than 1 MiB through cat", function()
    assert.are.equal("hello", process.run({ "cat" }, { stdin = "hello" }).stdout)
    assert.are.equal("a\0b\n", process.run({ "cat" }, { stdin = "a\0b\n" }).stdout)
    assert.are.equal("", process.run({ "cat" }).stdout) -- /dev/null
    local big = ("0123456789abcdef"):rep(150000) -- 2.4 MB
    local r = process.run({ "cat" }, { stdin = big })
    assert.is_true(r.ok)
    assert.are.equal(#big, #r.stdout)
    assert.is_true(r.stdout == big)
    -- a child that stops reading early does not make us fail or hang
    r = process.run({ "head", "-c", "5" }, { stdin = big })
    assert.are.same({ 0, "01234" }, { r.code, r.stdout })
  end)

  it("captures more than 1 MiB on both streams at once exactly", function()
    local r = process.run({ "sh", "-c",
      'head -c 3000000 /dev/zero | tr "\\0" a; head -c 3000000 /dev/zero | tr "\\0" b >&2; echo end' })
    assert.are.equal(0, r.code)
    assert.are.equal(3000004, #r.stdout)
    assert.are.equal(3000000, #r.stderr)
    assert.is_true(r.stdout == ("a"):rep(3000000) .. "end\n")
    assert.is_true(r.stderr == ("b"):rep(3000000))
    assert.is_false(r.truncated)
  end)

  it("keeps the last max_capture bytes and says it truncated", function()
    local r = process.run({ "sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; printf END" },
      { max_capture = 1000 })
    assert.is_true(r.truncated)
    assert.are.equal(("a"):rep(997) .. "END", r.stdout)
    r = process.run({ "echo", "x" }, { capture = false })
    assert.are.same({ true, "" }, { r.ok, r.stdout })
  end)

  it("resets SIGPIPE to default in the child", function()
    -- with SIGPIPE ignored, yes would print 'Broken pipe' and exit 1
    local r = process.run({ "sh", "-c", "yes | head -n 1; echo ${PIPESTATUS-done}" })
    assert.are.same({ 0, "y\ndone\n", "" }, { r.code, r.stdout, r.stderr })
  end)

  it("does not leak dhrun's file descriptors into the child", function()
    local f = assert(io.open(sh.tmpfile("open.txt", "x"))) -- Lua's io.open is not O_CLOEXEC
    local r = process.run({ "sh", "-c", "ls /proc/$$/fd" })
    f:close()
    assert.are.equal("0\n1\n2\n", r.stdout)
  end)

  it("appends to a file, or discards, when stdout/stderr say so", function()
    local log = sh.tmpdir() .. "/out.log"
    process.run({ "echo", "one" }, { stdout = log })
    local r = process.run({ "sh", "-c", "echo two; echo err >&2" }, { stdout = log, stderr = process.NULL })
    assert.are.same({ 0, "", "" }, { r.code, r.stdout, r.stderr })
    assert.are.equal("one\ntwo\n", sh.read(log))
    r = process.run({ "echo" }, { stdout = "/nonexistent/dir/log" })
    assert.are.same({ 126, "cannot run 'echo': stdout /nonexistent/dir/log: No such file or directory" },
      { r.code, r.error })
  end)

  it("times out: kills the whole process group, grandchildren included", function()
    local pidfile = sh.tmpdir() .. "/pid"
    local t0 = sys.now()
    local r = process.run({ "sh", "-c", "sleep 60 & echo $! > " .. pidfile .. "; sleep 60" }, { timeout = 0.5 })
    local elapsed = sys.now() - t0
    assert.is_true(r.timed_out)
    assert.is_false(r.ok)
    assert.are.equal("SIGTERM", r.signame)
    assert.is_true(elapsed >= 0.5 and elapsed < 5, "elapsed " .. elapsed)
    assert.is_false(alive(pid_in(pidfile)))
  end)

  it("SIGKILLs after grace when the child ignores SIGTERM", function()
    local t0 = sys.now()
    local r = process.run({ "sh", "-c", "trap '' TERM; sleep 30; sleep 30" }, { timeout = 0.2, grace = 0.3 })
    assert.are.same({ true, "SIGKILL" }, { r.timed_out, r.signame })
    assert.is_true(sys.now() - t0 < 3)
  end)

  it("SIGKILLs a grandchild ignoring SIGTERM as soon as the timed-out child is gone", function()
    local pidfile = sh.tmpdir() .. "/pid"
    local t0 = sys.now()
    local r = process.run({ "sh", "-c", "(trap '' TERM; exec sleep 30) & echo $! > " .. pidfile .. "; sleep 30" },
      { timeout = 0.3 })
    assert.are.same({ true, "SIGTERM" }, { r.timed_out, r.signame })
    assert.is_true(sys.now() - t0 < 2) -- no grace period: the child itself obeyed
    assert.is_false(alive(pid_in(pidfile)))
  end)

  it("returns soon after the child exits even if a grandchild holds the pipes", function()
    local pidfile = sh.tmpdir() .. "/pid"
    local t0 = sys.now()
    local r = process.run({ "sh", "-c", "sleep 30 & echo $! > " .. pidfile .. "; echo bye" })
    assert.is_true(sys.now() - t0 < 2)
    assert.are.same({ 0, "bye\n" }, { r.code, r.stdout })
    local pid = pid_in(pidfile)
    assert.is_true(running(pid)) -- not a timeout: a daemon may outlive its parent
    process.run({ "kill", tostring(pid) })
  end)

  it("measures a plausible duration", function()
    local r = process.run({ "sleep", "0.3" })
    assert.is_true(r.duration >= 0.29 and r.duration < 2, "duration " .. r.duration)
  end)

  it("calls on_line for every line as it is written", function()
    local seen = {}
    local r = process.run({ "sh", "-c", "echo one; echo err >&2; sleep 0.5; printf 'two\\nthree'" }, {
      on_line = function(stream, line) seen[#seen + 1] = { stream, line, sys.now() } end,
    })
    assert.are.equal("one\ntwo\nthree", r.stdout)
    table.sort(seen, function(a, b) return a[3] < b[3] end)
    local lines = {}
    for i, s in ipairs(seen) do lines[i] = s[1] .. ":" .. s[2] end
    table.sort(lines)
    assert.are.same({ "stderr:err", "stdout:one", "stdout:three", "stdout:two" }, lines)
    local t = {}
    for _, s in ipairs(seen) do t[s[2]] = s[3] end
    assert.is_true(t.two - t.one >= 0.4, "lines were not delivered live")
  end)

  it("streams prefixed, redacted lines to dhrun's stdout and stderr", function()
    local r = sh.dhrun({ "-e", [[
      local sys = require "dhrun.core.sys"
      sys.add_secret("hunter2")
      local process = require "dhrun.process"
      print("before")
      local r = process.run({ "sh", "-c", "echo one; echo two hunter2; echo oops >&2; printf partial" },
        { stream = true, prefix = "  [build] " })
      print("after", r.code, r.stdout == "one\ntwo hunter2\npartial")]] })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("before\n  [build] one\n  [build] two ***\n  [build] partial\nafter\t0\ttrue\n", r.stdout)
    assert.are.equal("  [build] oops\n", r.stderr)
  end)

  it("streams live, before the child has finished", function()
    local dir = sh.tmpdir()
    local proc <close> = process.spawn({ sh.bin, "-e", [[
      require("dhrun.process").run({ "sh", "-c", "echo first; exec sleep 30" }, { stream = true, prefix = "> " })]] },
      { stdout = dir .. "/out" })
    assert.are.equal("> first\n", wait_for_file(dir .. "/out"))
    assert.is_true(proc:running())
    local r = proc:stop()
    assert.are.equal(143, r.code) -- dhrun forwarded the SIGTERM and exited with 128+15
  end)
end)

describe("process.shell", function()
  it("runs a command line through /bin/sh -c", function()
    local r = process.shell("echo $((6 * 7)) | tr 4 x", { env = { DHRUN_T = "1" } })
    assert.are.same({ true, "x2\n" }, { r.ok, r.stdout })
    assert.are.same({ "/bin/sh", "-c", "echo $((6 * 7)) | tr 4 x" }, r.argv)
    assert.has_error(function() process.shell({ "ls" }) end, "process.shell: cmdline must be a string, got table")
  end)
end)

describe("process.must", function()
  it("returns the result when the command succeeds", function()
    assert.are.equal("ok\n", process.must({ "echo", "ok" }).stdout)
  end)

  it("raises a process error, exit 1, with the tail of stderr", function()
    local ok, e = pcall(process.must, { "sh", "-c", "for i in $(seq 1 30); do echo line$i >&2; done; exit 3" })
    assert.is_false(ok)
    assert.are.same({ "process", 1 }, { e.kind, e.exit })
    assert.are.equal("'sh -c for i in $(seq 1 30); do echo line$i >&2; done; exit 3' exited with code 3", e.message)
    local want = {}
    for i = 11, 30 do want[#want + 1] = "line" .. i end
    assert.are.equal(table.concat(want, "\n"), e.output_tail)
    assert.are.equal(3, e.result.code)
    assert.are.equal(getmetatable(e), sys.error_mt)
  end)

  it("names signals, timeouts and programs that cannot start", function()
    local _, e = pcall(process.must, { "sh", "-c", "echo gone; kill -9 $$" })
    assert.are.equal("'sh -c echo gone; kill -9 $$' was killed by SIGKILL", e.message)
    assert.are.equal("gone", e.output_tail) -- stdout when stderr is empty
    _, e = pcall(process.must, { "sleep", "5" }, { timeout = 0.2 })
    assert.are.equal("'sleep 5' timed out after 0.2s", e.message)
    _, e = pcall(process.must, { "dhrun-no-such-program" })
    assert.are.same({ 1, "cannot run 'dhrun-no-such-program': not found in PATH" }, { e.exit, e.message })
  end)

  it("makes dhrun exit 1 with a redacted message", function()
    local r = sh.dhrun({ "-e", [[
      require("dhrun.core.sys").add_secret("pw123")
      require("dhrun.process").must({ "sh", "-c", "echo pw123 >&2; exit 2", "pw123" })]] })
    assert.are.equal(1, r.code)
    assert.are.equal("dhrun: 'sh -c echo *** >&2; exit 2 ***' exited with code 2\n", r.stderr)
  end)
end)

describe("process.spawn", function()
  it("runs a background child until stopped", function()
    local proc = process.spawn({ "sleep", "30" })
    assert.is_true(proc:pid() > 0)
    assert.is_true(proc:running())
    local none, why = proc:wait(0.1)
    assert.are.same({ nil, "timeout" }, { none, why })
    local t0 = sys.now()
    local r = proc:stop()
    assert.is_true(sys.now() - t0 < 2)
    assert.are.same({ false, 15, "SIGTERM" }, { r.ok, r.signal, r.signame })
    assert.is_false(proc:running())
    assert.is_false(alive(proc:pid()))
    assert.are.equal(r, proc:wait())
  end)

  it("waits for a child that exits on its own, streaming its output", function()
    local seen = {}
    local proc = process.spawn({ "sh", "-c", "echo ready; exit 4" }, {
      on_line = function(_, line) seen[#seen + 1] = line end,
    })
    local r = proc:wait(5)
    assert.are.same({ 4, { "ready" } }, { r.code, seen })
  end)

  it("stops the whole group when closed, SIGKILL after grace", function()
    local pidfile = sh.tmpdir() .. "/pid"
    local t0 = sys.now()
    do
      local proc <close> = process.spawn({ "sh", "-c", "trap '' TERM; sleep 30 & echo $! > " .. pidfile .. "; wait" },
        { grace = 0.3 })
      pid_in(pidfile)
      assert.is_true(proc:running())
    end
    assert.is_true(sys.now() - t0 < 3)
    assert.is_false(alive(pid_in(pidfile)))
  end)

  it("sys.alive tells a child that runs from one that was reaped, and refuses a pid that is not one", function()
    local proc = process.spawn({ "sleep", "30" })
    local pid = proc:pid()
    assert.is_true(sys.alive(pid))
    proc:stop()
    assert.is_false(sys.alive(pid))
    -- another user's process (PID 1) counts as alive: kill(0) says EPERM, or it is ours
    assert.is_true(sys.alive(1))
    for _, bad in ipairs({ 0, -1, 2 ^ 31, "x" }) do
      assert.is_false((pcall(sys.alive, bad)), tostring(bad))
    end
  end)

  it("raises when the program cannot start", function()
    local ok, e = pcall(process.spawn, { "dhrun-no-such-program" })
    assert.is_false(ok)
    assert.are.same({ "process", 1, "cannot run 'dhrun-no-such-program': not found in PATH" },
      { e.kind, e.exit, e.message })
  end)
end)

describe("Ctrl-C", function()
  it("stops the child, then dhrun exits 130, leaving nothing running", function()
    local dir = sh.tmpdir()
    local proc = process.spawn({ sh.bin, "-e", ([[
      require("dhrun.process").run({ "sh", "-c", "echo $$ > %s/pid; exec sleep 60" })
      print("not reached")]]):format(dir) }, { stdout = dir .. "/out", stderr = dir .. "/err" })
    local child = pid_in(dir .. "/pid")
    assert.is_true(running(child))
    local t0 = sys.now()
    proc:kill("INT")
    local r = assert(proc:wait(5))
    assert.is_true(sys.now() - t0 < 2)
    assert.are.equal(130, r.code)
    assert.are.equal("dhrun: interrupted (Ctrl-C)\n", sh.read(dir .. "/err"))
    assert.are.equal("", sh.read(dir .. "/out"))
    assert.is_false(alive(child))
  end)
  it("forwards SIGINT to the child's group, which may clean up before it goes", function()
    local dir = sh.tmpdir()
    local proc = process.spawn({ sh.bin, "-e", ([[
      require("dhrun.process").run({ "sh", "-c",
        "trap 'echo cleaned > %s/trap; exit 5' INT; sleep 60 & echo $! > %s/pid; wait" }, { grace = 30 })]]):format(
        dir, dir) },
      { stderr = dir .. "/err" })
    local grandchild = pid_in(dir .. "/pid")
    proc:kill("INT")
    -- (a grace of 30 s: on a machine this busy the shell may need more than the default 3 to run its trap)
    assert.are.equal(130, assert(proc:wait(40)).code)
    assert.are.equal("cleaned\n", wait_for_file(dir .. "/trap", 10))
    assert.is_false(alive(grandchild)) -- ignores SIGINT (a background job of sh): SIGKILLed
  end)
end)

describe("misuse", function()
  it("raises a string error naming the problem, at the caller's line", function()
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    assert.matches("^.-process_spec%.lua:%d+: process%.run: argv is empty",
      err(function() process.run({}) end))
    assert.matches("process.run: argv must be an array of strings, got string",
      err(function() process.run("ls -l") end), 1, true)
    assert.matches("process.run: argv[2] must be a string, got table",
      err(function() process.run({ "ls", {} }) end), 1, true)
    assert.matches("process.run: argv[2] contains a NUL byte",
      err(function() process.run({ "echo", "a\0b" }) end), 1, true)
    assert.matches("process.run: unknown option 'tiemout'",
      err(function() process.run({ "ls" }, { tiemout = 1 }) end), 1, true)
    assert.matches("process.run: option 'timeout' must be a number >= 0, got string",
      err(function() process.run({ "ls" }, { timeout = "1" }) end), 1, true)
    assert.matches("process.run: env.X must be a string or false, got number",
      err(function() process.run({ "ls" }, { env = { X = 1 } }) end), 1, true)
    assert.matches("process.spawn: unknown option 'timeout'",
      err(function() process.spawn({ "ls" }, { timeout = 1 }) end), 1, true)
    assert.matches("^.-process_spec%.lua:%d+: process%.must: argv is empty",
      err(function() process.must({}) end))
  end)
end)

describe("process.which", function()
  it("finds the first of the names that is a file on PATH, in PATH's order, or nil", function()
    local dir = sh.tmpdir()
    local a, b = dir .. "/a", dir .. "/b"
    sh.write(b .. "/tool", "#!/bin/sh\n")
    sh.write(a .. "/tool", "#!/bin/sh\n")
    sh.write(a .. "/dironly/x", "") -- a directory is not a program
    local old = os.getenv("PATH")
    sys.setenv("PATH", a .. ":" .. b)
    local ok, err = pcall(function()
      assert.are.equal(a .. "/tool", process.which("tool"))
      assert.are.equal(a .. "/tool", process.which("no-such-tool", "tool"))
      assert.is_nil(process.which("dironly"))
      assert.is_nil(process.which("no-such-tool"))
    end)
    sys.setenv("PATH", old)
    assert(ok, err)
    assert.has_error(function() process.which(42) end, "process.which: names must be strings, got number")
  end)
end)
