-- `--help` of the host, of every subcommand and of every script: exit 0 and
-- a usage text on stdout.  And the exit codes of `pivday call`: 0 ok, 1 API
-- error, 2 usage, 4 transport.
local helper = require "helper"
local q = helper.q

local BIN = helper.bin
local COMMANDS = { "sandbox", "listen", "events", "trigger", "call", "doctor" }

-- Runs pivday ARGS without the variables that would reach a live service;
-- returns stdout (stderr goes to the file errf when given) and the code.
local function run(args, env, errf)
  return helper.sh(("env -u PIVDAY_API_KEY -u PIVDAY_BASE_URL -u PIVDAY_DEBUG %s timeout 60 %s %s 2>%s")
    :format(env or "", q(BIN), args, errf and q(errf) or "/dev/null"))
end

local function scripts()
  local list = {}
  for name in helper.sh("ls scripts/*.lua 2>/dev/null"):gmatch("[^\n]+") do list[#list + 1] = name end
  table.sort(list)
  return list
end

describe("--help", function()
  for _, flag in ipairs { "--help", "-h" } do
    it("pivday " .. flag .. " prints the usage and every command", function()
      local out, rc = run(flag)
      assert.equal(0, rc)
      assert.truthy(out:find("^usage: pivday"), out)
      for _, c in ipairs(COMMANDS) do
        assert.truthy(out:find("\n  " .. c .. " ", 1, true), c .. " missing from pivday --help")
      end
    end)
  end

  for _, c in ipairs(COMMANDS) do
    it("pivday " .. c .. " --help", function()
      local out, rc = run(c .. " --help")
      assert.equal(0, rc, out)
      assert.truthy(out:find("usage: pivday " .. c, 1, true), out)
    end)
  end

  it("covers every script in scripts/", function()
    local list = scripts()
    assert.is_true(#list >= 6, "scripts/ has " .. #list .. " scripts")
    for _, s in ipairs(list) do
      local out, rc = run(q(s) .. " --help")
      assert.equal(0, rc, s .. " --help exited " .. tostring(rc) .. ":\n" .. out)
      assert.truthy(out:find("usage:", 1, true), s .. " --help printed no usage:\n" .. out)
      assert.truthy(out:find(s, 1, true), s .. " --help does not name the script:\n" .. out)
    end
  end)

  it("pivday with an unknown option exits 2 and shows the usage", function()
    local err = os.tmpname()
    local _, rc = run("--no-such-option", nil, err)
    local f = assert(io.open(err))
    local s = f:read("a")
    f:close()
    os.remove(err)
    assert.equal(2, rc)
    assert.truthy(s:find("unknown option", 1, true), s)
    assert.truthy(s:find("usage: pivday", 1, true), s)
  end)

  it("pivday --version", function()
    local out, rc = run("--version")
    assert.equal(0, rc)
    assert.truthy(out:match("^pivday %d+%.%d+%.%d+ %(Lua 5%.4"), out)
  end)
end)

describe("pivday call exit codes", function()
  it("0 on success", function()
    local out, rc = run("--sandbox call account.get -o json")
    assert.equal(0, rc, out)
    assert.truthy(out:find('"balance"', 1, true))
  end)

  it("1 on an API error (a number that does not exist)", function()
    local err = os.tmpname()
    local _, rc = run("--sandbox call numbers.get 999999", nil, err)
    local f = assert(io.open(err))
    local s = f:read("a")
    f:close()
    os.remove(err)
    assert.equal(1, rc, s)
    assert.truthy(s:find("NUMBER_NOT_FOUND", 1, true), s)
  end)

  it("2 on usage errors: unknown method, missing required field, missing path parameter, bad option", function()
    for _, args in ipairs {
      "call no.such.method",
      "--sandbox call numbers.purchase",
      "call numbers.get",
      "call --no-such-option",
      "call account.get -o yaml",
    } do
      local _, rc = run(args)
      assert.equal(2, rc, "pivday " .. args)
    end
  end)

  it("4 when the base URL is unreachable", function()
    local _, rc = run("call account.get", "PIVDAY_BASE_URL=http://127.0.0.1:1/api/v1 PIVDAY_API_KEY=x")
    assert.equal(4, rc)
  end)
end)
