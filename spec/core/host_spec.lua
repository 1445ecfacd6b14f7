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
