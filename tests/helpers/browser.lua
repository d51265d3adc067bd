-- Test helper: headless Chromium, when installed, loading a page the way a
-- user's browser would, and what its console showed.
--
--   browser.path            the Chromium binary, or nil when none is installed
--   browser.browse(url)     {dom = the DOM after the scripts ran, console = {message, ...}}
local sh = require "sh"
local process = require "dhrun.process"

local M = {}

M.path = process.which("chromium", "chromium-browser", "google-chrome")

function M.browse(url)
  local chromium = assert(M.path, "chromium is not installed (make deps installs it)")
  local r = process.run({ chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--user-data-dir=" .. sh.tmpdir(), "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000",
    "--dump-dom", url }, { timeout = 60 })
  assert(r.ok, "chromium failed: " .. (r.error or r.stderr:sub(-2000)))
  local console = {}
  for line in r.stderr:gmatch("[^\n]+") do
    -- Chromium logs console output as `...:INFO:CONSOLE:12] "text", source: URL (12)`
    local msg = line:match(":CONSOLE[:%(]%d+%)?%]%s*(.*)$")
    if msg then console[#console + 1] = msg end
  end
  return { dom = r.stdout, console = console }
end

return M
