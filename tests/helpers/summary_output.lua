-- busted output handler: one line per test, failures in full, and the
-- closing line CI reads: `N passed, N failed[, N skipped]`.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.base"()
  local pretty = require "pl.pretty"

  local function out(s)
    io.stdout:write(s, "\n")
    io.stdout:flush()
  end

  local function message_of(t)
    local m = t.message
    if m == nil then return "nil error" end
    if type(m) ~= "string" then m = pretty.write(m) end
    return m
  end

  local function where(t)
    local tr = t.element and t.element.trace
    if tr and tr.short_src then return tr.short_src .. ":" .. tr.currentline end
    return "?"
  end

  handler.testEnd = function(element, _parent, status)
    local name = handler.getFullName(element)
    local ms = element.duration and string.format(" (%d ms)", math.floor(element.duration * 1000 + 0.5)) or ""
    if status == "success" then
      out("ok    " .. name .. ms)
    elseif status == "pending" then
      out("skip  " .. name)
    else
      out("FAIL  " .. name .. ms)
    end
    return nil, true
  end

  local function show(list, label)
    for _, t in ipairs(list) do
      out("")
      out(label .. ": " .. (t.name or "?") .. "  [" .. where(t) .. "]")
      out("  " .. message_of(t):gsub("\n", "\n  "))
      if options.verbose and t.trace and t.trace.traceback then out(t.trace.traceback) end
    end
  end

  handler.suiteEnd = function()
    show(handler.failures, "failure")
    show(handler.errors, "error")
    for _, p in ipairs(handler.pendings) do
      if type(p.message) == "string" then out("skipped: " .. p.name .. ": " .. p.message) end
    end
    local passed = handler.successesCount
    local failed = handler.failuresCount + handler.errorsCount
    local line = string.format("%d passed, %d failed", passed, failed)
    if handler.pendingsCount > 0 then line = line .. string.format(", %d skipped", handler.pendingsCount) end
    out("")
    out(string.format("time: %.1f s", handler.getDuration()))
    out(line)
    return nil, true
  end

  -- Errors outside a test (a spec file that fails to load, a failing
  -- setup) count as failures too; report them where they happen.
  handler.error = function(element, _parent, message)
    out("ERROR " .. (element and element.name or "?") .. ": " .. tostring(message))
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  busted.subscribe({ "error", "file" }, handler.error)
  busted.subscribe({ "failure", "file" }, handler.error)
  busted.subscribe({ "error", "describe" }, handler.error)
  busted.subscribe({ "failure", "describe" }, handler.error)
  return handler
end
