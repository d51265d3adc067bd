-- dhrun.sql: SQL text read with PostgreSQL's own scanner and parser
-- (libpg_query, PostgreSQL 15's grammar; the C module is opened on first use).
--
--   sql.split(text)        -> { "stmt", ... }  | nil, message, position
--       each statement's text as written, without the ';' between them
--   sql.statements(text)   -> { {text=, display=}, ... } | nil, message, position
--       display: the statement without its leading comments, on one line
--   sql.parse(text)        -> parse tree (a Lua table) | nil, message, position
--   sql.created_tables(text) -> { "Name", ... } the tables CREATE TABLE makes
--       (as PostgreSQL names them: quoted as written, unquoted folded)
local cjson = require "cjson"

local sql = {}

local core
local function C()
  core = core or require "dhrun.core.sql"
  return core
end

function sql.split(text)
  local spans, err, pos = C().split(text)
  if not spans then return nil, err, pos end
  local out = {}
  for i, s in ipairs(spans) do out[i] = text:sub(s[1], s[1] + s[2] - 1) end
  return out
end

-- Leading whitespace and comments ("-- ...", "/* ... */", nested as
-- PostgreSQL nests them) of one statement.
local function strip_leading_comments(s)
  local pos = 1
  while true do
    local ws = s:match("^%s*()", pos)
    pos = ws
    if s:sub(pos, pos + 1) == "--" then
      local nl = s:find("\n", pos, true)
      if not nl then return "" end
      pos = nl + 1
    elseif s:sub(pos, pos + 1) == "/*" then
      local depth, i = 0, pos
      while i <= #s do
        local two = s:sub(i, i + 1)
        if two == "/*" then
          depth, i = depth + 1, i + 2
        elseif two == "*/" then
          depth, i = depth - 1, i + 2
          if depth == 0 then break end
        else
          i = i + 1
        end
      end
      if depth > 0 then return "" end
      pos = i
    else
      return s:sub(pos)
    end
  end
end
sql.strip_leading_comments = strip_leading_comments

function sql.statements(text)
  local list, err, pos = sql.split(text)
  if not list then return nil, err, pos end
  local out = {}
  for _, s in ipairs(list) do
    local body = strip_leading_comments(s)
    if body:find("%S") then
      out[#out + 1] = { text = s, display = (body:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) }
    end
  end
  return out
end

function sql.parse(text)
  local json, err, pos = C().parse(text)
  if not json then return nil, err, pos end
  return cjson.decode(json)
end

function sql.created_tables(text)
  local tree = sql.parse(text)
  local out = {}
  for _, raw in ipairs(tree and tree.stmts or {}) do
    local create = raw.stmt and raw.stmt.CreateStmt
    if create and create.relation and create.relation.relname then
      out[#out + 1] = create.relation.relname
    end
  end
  return out
end

return sql
