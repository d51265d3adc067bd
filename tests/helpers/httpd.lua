-- Test helper: the real HTTP server of tests/helpers/httpd.js (Node), on
-- 127.0.0.1 and a random free port, run as a child of the test process.
--
--   local server = httpd.start()               -- httpd.start{ tls = true }: HTTPS with a
--   finally(function() server:stop() end)      --   self-signed certificate (openssl CLI)
--   server.url .. "/echo"       -- "http://127.0.0.1:PORT/echo" ("https://..." with tls)
--   server.port, server.closed_port (free a moment ago: nothing listens there)
local process = require "dhrun.process"
local sys = require "dhrun.core.sys"
local sh = require "sh"

local httpd = {}

local Server = {}
Server.__index = Server

function Server:stop()
  if self.proc then
    self.proc:stop(1)
    self.proc = nil
  end
end

-- A throwaway self-signed certificate for 127.0.0.1 (the openssl CLI comes
-- with PostgreSQL's ssl-cert dependency, which the suite needs anyway).
local function self_signed(dir)
  local key, cert = dir .. "/key.pem", dir .. "/cert.pem"
  local r = process.run({ "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1" })
  assert(r.ok, "openssl req failed: " .. (r.error or r.stderr))
  return key, cert
end

function httpd.start(opts)
  opts = opts or {}
  local dir = sh.tmpdir()
  local argv = { "node", sh.root .. "/tests/helpers/httpd.js" }
  if opts.tls then
    local key, cert = self_signed(dir)
    for _, a in ipairs({ "--tls", key, cert }) do argv[#argv + 1] = a end
  end
  local proc = process.spawn(argv, { stdout = dir .. "/ports", stderr = dir .. "/stderr" })
  local deadline = sys.now() + 10
  repeat
    local port, closed = (sh.read(dir .. "/ports") or ""):match("^(%d+) (%d+)\n")
    if port then
      return setmetatable({ proc = proc, port = tonumber(port), closed_port = tonumber(closed),
        url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port }, Server)
    end
    sys.sleep(0.02)
  until sys.now() > deadline or not proc:running()
  proc:stop(1)
  error("tests/helpers/httpd.js did not start: " .. (sh.read(dir .. "/stderr") or ""))
end

return httpd
