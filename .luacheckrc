-- luacheck configuration for dhrun's Lua code.
std = "lua54"
max_line_length = 120
codes = true
files["tests"] = { std = "+busted" }
files["tests/helpers/summary_output.lua"] = { std = "+busted" }
exclude_files = { "**/node_modules/**", "build/**", "build-asan/**" }
