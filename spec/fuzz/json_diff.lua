--- spec/fuzz/json_diff.lua: differential fuzzing of pivday.json.decode's
-- C fast path (core.json_decode) against its reference, lua-cjson plus
-- pivday.json's corrections.
--
--     lua5.4 spec/fuzz/json_diff.lua [CASES [SEED]]     (from the repo root)
--
-- pivday.json.decode tries core.json_decode first and falls back to the
-- cjson path on anything the C decoder refuses. That is only right if the
-- C decoder never accepts a text cjson refuses, and gives the same value
-- when both accept: integers and floats alike (math.type too), the same
-- bytes in strings, json.null, empty lists marked as json.array. Texts
-- are generated (every JSON construct, numbers in the forms cjson's strtod
-- takes and RFC 8259 does not, escapes and surrogates, control bytes,
-- CR/LF, NUL, deep nesting around the limit of 200) and then mutated byte
-- by byte with JSON tokens. Any disagreement is printed with the text in
-- %q form and the run fails. spec/fuzz/json_diff_spec.lua runs it in the
-- test suite with a fixed seed.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local M = {}

local json = require "pivday.json"
local reference, fast = json._cjson_decode, json._c_decode

-- The reference turns a one-item list holding its own placeholder string
-- "\0pd:[]" into an empty list when the text also has an empty list
-- somewhere; the C decoder returns the string, as written. Never generated.
local PLACEHOLDER = "\0pd:[]"

local function same(a, b, path)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return false, path .. ": type " .. ta .. " vs " .. tb end
  if ta == "number" then
    if math.type(a) ~= math.type(b) then
      return false, ("%s: %s %s vs %s %s"):format(path, math.type(a), a, math.type(b), b)
    end
    if a ~= b and not (a ~= a and b ~= b) then return false, ("%s: %.17g vs %.17g"):format(path, a, b) end
    if a == 0 and math.type(a) == "float" and 1 / a ~= 1 / b then return false, path .. ": signed zero" end
    return true
  end
  if ta ~= "table" then
    if a ~= b then return false, ("%s: %q vs %q"):format(path, tostring(a), tostring(b)) end
    return true
  end
  if getmetatable(a) ~= getmetatable(b) then return false, path .. ": metatable differs" end
  for k, v in pairs(a) do
    if math.type(k) ~= math.type(next({ [k] = true })) then return false, path .. ": key type" end
    local ok, why = same(v, rawget(b, k), path .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false, path .. ": extra key " .. tostring(k) end
  end
  return true
end

-------------------------------------------------------------- generation --

local rnd = math.random

local function pick(t) return t[rnd(#t)] end

local NUMBERS = {
  "0", "-0", "1", "-1", "7", "42", "-42", "10", "100", "123456789012345",
  "-123456789012345", "1234567890123456", "9007199254740993", "9223372036854775807",
  "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
  "18446744073709551616", "1.0", "-0.0", "0.0", "1.5", "150.5", "0.1", "1e2",
  "1E2", "1e+2", "1e-2", "1.5e3", "-1.25E-3", "1e300", "1e400", "-1e400", "1e-400",
  "2.5e-324", "4.9e-324", "1.7976931348623157e308", "12345678901234567890.0",
  "0.30000000000000004", "100000000000000000000", "1e15", "1e16", "1e19",
  "9.2233720368547758e18", "-9.2233720368547758e18",
  -- cjson's strtod takes these, RFC 8259 does not
  "1.", "-01", "01", "00", "0x1", "0X1f", "-0x10", ".5", "-.5", "+1", "1e", "1e+",
  "-", "--1", "1.e5", "0e", "0.e1", "1..2", "1ee2", "Infinity", "-Infinity", "NaN",
  "nan", "inf", "-inf", "0x", "1_000", "1 2",
}

local ESCAPES = {
  '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9",
  "\\u20AC", "\\u0000", "\\u001f", "\\uD83D\\uDE00", "\\ud83d\\ude00", "\\uD83D",
  "\\uDE00", "\\uD83Dx", "\\uD83D\\u0041", "\\uDBFF\\uDFFF", "\\uD800\\uDC00", "\\u12",
  "\\uZZZZ", "\\x41", "\\a", "\\'", "\\", "\\u", "\\U0041",
}

local RAW = {
  "a", "b", "Z", "0", " ", "é", "€", "😀", "\1", "\31", "\127", "\t", "\n", "\r",
  "\0", "\255", "\192\128", "\237\160\128", "'", "[", "]", "{", "}", ":", ",",
  PLACEHOLDER:sub(2),
}

local function gen_string()
  local parts = { '"' }
  for _ = 1, rnd(0, 6) do
    local r = rnd()
    if r < 0.25 then parts[#parts + 1] = pick(ESCAPES)
    elseif r < 0.5 then parts[#parts + 1] = pick(RAW)
    else
      local n = rnd(1, 12)
      local b = {}
      for i = 1, n do b[i] = string.char(rnd(97, 122)) end
      parts[#parts + 1] = table.concat(b)
    end
  end
  if rnd() < 0.97 then parts[#parts + 1] = '"' end
  return table.concat(parts)
end

local WS = { "", "", "", " ", "  ", "\t", "\n", "\r\n", " \n ", "\f", "\v", "\0" }

local function ws()
  if rnd() < 0.8 then return "" end
  return pick(WS)
end

local gen_value

local function gen_container(depth)
  if rnd() < 0.5 then
    local n = rnd() < 0.2 and 0 or rnd(1, depth < 3 and 6 or 2)
    local items = {}
    for i = 1, n do items[i] = ws() .. gen_value(depth + 1) .. ws() end
    if n == 0 and rnd() < 0.5 then items[1] = pick { " ", "\n", "\t ", "\r\n" } end
    local s = "[" .. table.concat(items, rnd() < 0.97 and "," or pick { ",,", " ", ":" })
    if rnd() < 0.03 then s = s .. "," end
    return s .. (rnd() < 0.98 and "]" or pick { "}", "" })
  end
  local n = rnd() < 0.2 and 0 or rnd(1, depth < 3 and 6 or 2)
  local items = {}
  for i = 1, n do
    local key = rnd() < 0.9 and ('"k' .. rnd(1, 5) .. '"') or
      (rnd() < 0.5 and gen_string() or pick { "k", "1", "null", "'k'" })
    items[i] = ws() .. key .. ws() .. (rnd() < 0.98 and ":" or pick { "", "=", "::" }) ..
      ws() .. gen_value(depth + 1) .. ws()
  end
  local s = "{" .. table.concat(items, rnd() < 0.97 and "," or pick { ",,", " " })
  if rnd() < 0.03 then s = s .. "," end
  return s .. (rnd() < 0.98 and "}" or pick { "]", "" })
end

function gen_value(depth)
  local r = rnd()
  if depth < 8 and r < 0.4 then return gen_container(depth) end
  r = rnd()
  if r < 0.35 then return pick(NUMBERS) end
  if r < 0.7 then return gen_string() end
  return pick { "true", "false", "null", "tru", "nul", "falsey", "True", "NULL", "nulll" }
end

local function gen_deep()
  local d = rnd(195, 205)
  local open, close = {}, {}
  for i = 1, d do
    if rnd() < 0.5 then open[i], close[d - i + 1] = "[", "]"
    else open[i], close[d - i + 1] = '{"a":', "}" end
  end
  return table.concat(open) .. pick { "1", "[]", "{}", '"x"', "null" } .. table.concat(close)
end

local TOKENS = {
  "{", "}", "[", "]", ",", ":", '"', "\\", "\\u", "0", "1", "-", ".", "e", "E", "+",
  "true", "false", "null", " ", "\n", "\r", "\t", "\0", "\255", "[]", "{}", '""',
  "\\uD83D", "\\uDE00", "1e400", "0x",
}

local function mutate(s)
  for _ = 1, rnd(1, 4) do
    local len = #s
    local i = rnd(1, len + 1)
    local r = rnd()
    if r < 0.3 and len > 0 then
      s = s:sub(1, i - 1) .. s:sub(i + rnd(1, 3))            -- delete
    elseif r < 0.6 then
      s = s:sub(1, i - 1) .. pick(TOKENS) .. s:sub(i)        -- insert a token
    elseif r < 0.75 and len > 0 then
      s = s:sub(1, i - 1) .. string.char(rnd(0, 255)) .. s:sub(i + 1) -- replace a byte
    elseif r < 0.85 and len > 0 then
      s = s:sub(1, rnd(0, len))                              -- truncate
    elseif len > 0 then
      i = math.min(i, len)
      local j = rnd(i, len)
      s = s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1)         -- duplicate a slice
    end
  end
  return s
end

local function gen_text()
  local r = rnd()
  local s
  if r < 0.02 then s = gen_deep()
  elseif r < 0.08 then s = pick(NUMBERS)
  elseif r < 0.12 then s = gen_string()
  else s = gen_value(0) end
  s = ws() .. s .. ws()
  if rnd() < 0.45 then s = mutate(s) end
  return s
end

------------------------------------------------------------------- check --

--- Checks one text. Returns true, or false and why.
function M.check(s)
  local want, werr = reference(s)
  local got = json.decode(s)
  if want == nil then
    -- Refused by the reference: decode must refuse too, with its message.
    local g, gerr = json.decode(s)
    if g ~= nil or gerr ~= werr then return false, "accepted or other message: " .. tostring(gerr) end
    if fast and fast(s) ~= nil then return false, "the C decoder accepts what cjson refuses" end
    return true, "refused"
  end
  if s:find(PLACEHOLDER, 1, true) or s:find("\\u0000pd:[]", 1, true) then return true, "skip" end
  local ok, why = same(got, want, "$")
  if not ok then return false, why end
  if fast then
    local c = fast(s)
    if c == nil then return true, "fallback" end
    return true, "fast"
  end
  return true, "reference only"
end

--- Runs `cases` generated texts from `seed`. Returns the counts; raises on
-- the first disagreement.
function M.run(cases, seed)
  assert(fast, "pivday.core (build/pivday/core.so) is not loaded: nothing to compare")
  math.randomseed(seed)
  local counts = {}
  for i = 1, cases do
    local s = gen_text()
    local ok, what = M.check(s)
    if not ok then
      error(("json_diff: case %d (seed %d): %s\ntext: %q"):format(i, seed, what, s), 0)
    end
    counts[what] = (counts[what] or 0) + 1
  end
  return counts
end

if arg and arg[0] and arg[0]:find("json_diff%.lua$") then
  local cases = math.tointeger(tonumber(arg[1] or "200000"))
  local seed = math.tointeger(tonumber(arg[2] or tostring(os.time())))
  local counts = M.run(cases, seed)
  print(("json_diff: %d cases, seed %d: %d both accept (C path), %d C refuses but cjson "
    .. "accepts (fallback), %d both refuse, %d skipped"):format(cases, seed, counts.fast or 0,
    counts.fallback or 0, counts.refused or 0, counts.skip or 0))
end

return M
