-- The `pivday` executable: scripts, -e, stdin, the REPL through a pipe,
-- and `require "pivday"` from stock lua5.4.
local helper = require "helper"
local sh, q, bin = helper.sh, helper.q, helper.bin

local function tmpfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(content)
  f:close()
  return name
end

describe("pivday host", function()
  it("prints its version and help", function()
    local out, rc = sh(bin .. " --version")
    assert.equal(0, rc)
    assert.matches("^pivday %d+%.%d+%.%d+", out)
    out, rc = sh(bin .. " --help")
    assert.equal(0, rc)
    assert.matches("usage: pivday", out)
  end)

  it("runs -e with the pivday global loaded on first use", function()
    local out, rc = sh(bin .. [[ -e 'print(type(pivday.run), 1 + 1)']])
    assert.equal(0, rc)
    assert.equal("function\t2\n", out)
  end)

  it("runs a script with arg set like lua5.4 does", function()
    local f = tmpfile("print(arg[0] ~= nil, arg[1], arg[2], #arg)\n")
    local out, rc = sh(bin .. " " .. f .. " a b")
    os.remove(f)
    assert.equal(0, rc)
    assert.equal("true\ta\tb\t2\n", out)
  end)

  it("exits non-zero with the traceback on a script error", function()
    local f = tmpfile("local function inner() error('kaboom') end\ninner()\n")
    local out, rc = sh(bin .. " " .. f .. " 2>&1")
    os.remove(f)
    assert.equal(1, rc)
    assert.matches("kaboom", out)
    assert.matches("stack traceback", out)
  end)

  it("prints a pivday.Error raised by assert through its __tostring", function()
    local out, rc = sh(bin .. [[ -e 'assert(nil, pivday.Error{kind="api", code="NUMBER_NOT_FOUND", status=404, message="no such number"})' 2>&1]])
    assert.equal(1, rc)
    assert.matches("NUMBER_NOT_FOUND %(404%): no such number", out)
  end)

  it("keeps a pivday.Error intact through assert", function()
    local out, rc = sh(bin .. [[ -e 'local e = pivday.Error{kind="local", code="X", message="m"}; local ok, got = pcall(assert, nil, e); print(ok, got == e)']])
    assert.equal(0, rc)
    assert.equal("false\ttrue\n", out)
  end)

  -- The host's state allocates from its own pool (bindings/state.c): the
  -- same churn run by stock lua5.4 (malloc) must give the same answers.
  it("keeps Lua's memory intact through its pooled allocator, as stock lua5.4 does", function()
    local f = tmpfile([[
      local seed = 12345
      local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n + 1 end
      local keep, bad = {}, 0
      local function str(n, c) return string.rep(string.char(65 + c % 26), n) end
      for round = 1, 4000 do
        local n = rnd(1300)                 -- strings on both sides of the pool's 512 bytes
        local s = str(n, round) .. round
        local t = {}
        for i = 1, rnd(40) do t["k" .. i] = s; t[i] = i end   -- hash and array parts grow
        for i = 1, rnd(40) do t["k" .. i] = nil end           -- and shrink at the next rehash
        t.s = s
        keep[rnd(300)] = t                                    -- a random survivor set
        if round % 500 == 0 then collectgarbage() end
      end
      local sum = 0
      for i = 1, 300 do
        local t = keep[i]
        if t then
          local n = #t.s
          local digits = t.s:match("%d+$")
          if t.s ~= str(n - #digits, tonumber(digits)) .. digits then bad = bad + 1 end
          for j = 1, #t do if t[j] ~= j then bad = bad + 1 end end
          sum = (sum + n * i + #t) % 1000000007
        end
      end
      local co = coroutine.wrap(function(...) return select("#", ...) end)
      print(sum, bad, co(table.unpack(keep, 1, 200)))
      warn("@on"); warn("piece ", "by piece"); warn("@off"); warn("muted")
    ]])
    local out, rc = sh(bin .. " " .. f .. " 2>&1")
    local want = sh("lua5.4 " .. f .. " 2>&1")
    os.remove(f)
    assert.equal(0, rc)
    assert.matches("^%d+\t0\t200\nLua warning: piece by piece\n$", out)
    assert.equal(want, out)
  end)

  it("runs stdin as a script with -", function()
    local out, rc = sh("echo 'print(6 * 7)' | " .. bin .. " -")
    assert.equal(0, rc)
    assert.equal("42\n", out)
  end)

  it("finishes spawned tasks after the main chunk", function()
    local out, rc = sh(bin .. [[ -e 'pivday.spawn(function() pivday.sleep(0.05) print("late") end) print("main")']])
    assert.equal(0, rc)
    assert.equal("main\nlate\n", out)
  end)

  it("REPL through a pipe: expressions print, multi-line input, a real HTTP call", function()
    local input = table.concat({
      "1 + 1",
      "local t = {b = 1, a = {x = true}}",
      "function f(n)",
      "  return n * 2",
      "end",
      "f(21)",
      "{z = 1, a = 'x', [1] = 'first'}",
      "srv = pivday.http.server{handler = function(req) return 200, {}, 'pong ' .. req.path end}",
      "pivday.http.request{url = srv.url .. '/ping'}.body",
      "error('oops')",
      "'still alive'",
    }, "\n") .. "\n"
    local f = tmpfile(input)
    local out, rc = sh(bin .. " < " .. f .. " 2>/dev/null")
    os.remove(f)
    assert.equal(0, rc)
    assert.matches("^2\n", out)
    assert.matches("\n42\n", out)
    assert.matches('{\n  "first",\n  a = "x",\n  z = 1,\n}', out, 1, true)
    assert.matches('"pong /ping"', out, 1, true)
    assert.matches("oops", out)
    assert.matches('"still alive"\n$', out)
  end)

  it("REPL prints cycles without looping", function()
    local out, rc = sh("printf 't = {}; t.self = t\\nt\\n' | " .. bin)
    assert.equal(0, rc)
    assert.matches("self = <cycle>", out, 1, true)
  end)

  it("loads from stock lua5.4 with the build tree's paths", function()
    local cmd = "LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 -e "
      .. q("local p = require 'pivday'; print(p.version, p.run(function() p.sleep(0.01) return 'ok' end))")
    local out, rc = sh(cmd)
    assert.equal(0, rc)
    assert.matches("^%d+%.%d+%.%d+\tok\n$", out)
  end)
end)
