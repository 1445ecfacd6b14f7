-- Security (issue 8): where the API key, proxy passwords and export
-- contents must never show up, the key file's permissions, and TLS
-- verification that only an explicit, announced option turns off.
--
-- A distinctive key is used throughout and every place it could leak to
-- is grepped for it: error messages, tostring of errors and objects,
-- tracebacks, the REPL, the debug log, the sandbox's request log and the
-- webhook journal.
local helper = require "helper"
local pivday = require "pivday"
local json = require "pivday.json"
local client = require "pivday.client"
local pretty = require "pivday.pretty"

local T = helper.t
local KEY = "pdk_test_ZZ9SECRETKEY8c1f0e2d4b6a"

local function no_key(text, where)
  assert.is_nil(tostring(text):find(KEY, 1, true), where .. " shows the API key:\n" .. tostring(text))
  -- A part of it (enough to be useful to someone) must not show either.
  assert.is_nil(tostring(text):find(KEY:sub(10, 26), 1, true), where .. " shows part of the API key")
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. helper.q(d)))
  return d
end

describe("hardening: secrets #security", function()
  local sb, dir

  setup(function()
    client._reset_holds()
    sb = assert(pivday.sandbox { api_key = KEY })
    sb:update_account { balance = 10000 }
    dir = tmpdir()
  end)

  teardown(function()
    if sb then sb:close() end
    os.execute("rm -rf " .. helper.q(dir))
  end)

  it("keeps the key out of errors, tostring, tracebacks, the debug log and the sandbox's request log", function()
    local logs = {}
    local api = pivday.client { api_key = KEY, base_url = sb.base_url, debug = true,
      log = function(line) logs[#logs + 1] = line end, backoff_base = 0.01, backoff_max = 0.02, deadline = T(10) }
    assert.equal(sb.api_key, KEY)

    local seen = {}
    local function collect(res, err)
      seen[#seen + 1] = pretty.format(res)
      if err then
        seen[#seen + 1] = tostring(err)
        seen[#seen + 1] = pretty.format(err)
        seen[#seen + 1] = json.encode(err)
        local ok, tb = xpcall(function() assert(res, err) end, function(e) return debug.traceback(tostring(e)) end)
        assert.is_false(ok)
        seen[#seen + 1] = tb
      end
    end
    collect(api.account.get())
    collect(api.numbers.get("no-such-number"))                       -- api error
    collect(api.numbers.purchase { country_code = "SE" })            -- local validation error
    sb:fault { match = "/account", status = 500, times = 5 }
    collect(api.account.get())                                       -- retried server errors
    sb:fault { match = "/account", drop = "before", times = 5 }
    collect(api.account.get())                                       -- transport errors
    local down = pivday.client { api_key = KEY, base_url = "http://127.0.0.1:1/api/v1", max_retries = 0 }
    collect(down.account.get())                                      -- connection refused
    seen[#seen + 1] = tostring(api) .. tostring(down) .. pretty.format(api) .. pretty.format(api.numbers)
    seen[#seen + 1] = pretty.format(client.defaults)

    for i, s in ipairs(seen) do no_key(s, "value #" .. i) end
    assert.is_true(#logs > 0)
    for _, l in ipairs(logs) do no_key(l, "debug log") end
    no_key(json.encode(sb:requests {}), "the sandbox request log")
  end)

  it("redacts a key that a server echoes back in an error", function()
    -- A misbehaving server (or a proxy) that echoes the Authorization
    -- header, once in the API envelope, once in a plain-text body.
    local srv = assert(pivday.http.server { port = 0, handler = function(req)
      local auth = req.headers.authorization or ""
      if req.path:match("envelope") then
        return 400, { ["content-type"] = "application/json" },
          json.encode { success = false, error = { code = "VALIDATION_ERROR", message = "bad header " .. auth } }
      end
      return 502, { ["content-type"] = "text/plain" }, "upstream rejected " .. auth
    end })
    local api = pivday.client { api_key = KEY, base_url = srv.url .. "/envelope/api/v1", max_retries = 0 }
    local _, e1 = api.account.get()
    local api2 = pivday.client { api_key = KEY, base_url = srv.url .. "/plain/api/v1", max_retries = 0 }
    local _, e2 = api2.account.get()
    srv:close()
    assert.is_truthy(e1 and e2)
    for _, e in ipairs { e1, e2 } do
      no_key(tostring(e), "tostring(err)")
      no_key(pretty.format(e), "the error's fields")
      no_key(json.encode(e), "the error as JSON")
    end
    assert.is_truthy(tostring(e1):find("<redacted>", 1, true))
  end)

  it("masks proxy passwords and export contents in the debug log", function()
    local logs = {}
    local api = pivday.client { api_key = KEY, base_url = sb.base_url, debug = true,
      log = function(line) logs[#logs + 1] = line end }
    local server = assert(api.proxy.servers()).servers[1]
    local order = assert(api.proxy.purchase { server_id = server.id, quantity = 2, months = 1 }).order
    local full = assert(api.proxy.order(order.id))
    local export = assert(api.proxy.export(order.id, { format = "socks5" }))
    local secrets = {}
    local function grab(v)
      if type(v) == "table" then
        for k, x in pairs(v) do
          if type(x) == "string" and #x >= 6 and tostring(k):match("pass") then secrets[#secrets + 1] = x end
          grab(x)
        end
      end
    end
    grab(order) grab(full) grab(export)
    local export_text = type(export) == "string" and export or json.encode(export)
    assert.is_true(#secrets > 0, "the sandbox gave no proxy password to look for")
    local log = table.concat(logs, "\n")
    assert.is_true(#logs >= 4)
    for _, p in ipairs(secrets) do
      assert.is_nil(log:find(p, 1, true), "the debug log shows a proxy password")
    end
    for line in export_text:gmatch("[^\n]+") do
      if #line >= 12 then assert.is_nil(log:find(line, 1, true), "the debug log shows export contents") end
    end
    no_key(log, "debug log")
  end)

  it("keeps the key out of the webhook journal", function()
    local hooks = assert(pivday.webhooks { port = 0, journal = dir .. "/events.jsonl" })
    sb:set_webhook_url(hooks.local_url)
    local got = 0
    hooks:on("*", function() got = got + 1 end)
    sb:emit("sms.received", { piv_num_id = "n1", code = "123456", text = "key " .. KEY:sub(1, 4) })
    pivday.run(function()
      local deadline = pivday.now() + T(5)
      while got == 0 and pivday.now() < deadline do pivday.sleep(0.02) end
    end)
    hooks:close()
    assert.is_true(got > 0, "no event arrived")
    local f = assert(io.open(dir .. "/events.jsonl"))
    local text = f:read("a")
    f:close()
    assert.is_true(#text > 0)
    no_key(text, "the journal")
    local sf = io.open(dir .. "/events.jsonl.secret")
    if sf then no_key(sf:read("a"), "the journal's secret file") sf:close() end
  end)

  it("keeps the key out of the REPL and of a failing script's traceback", function()
    local keyfile = dir .. "/sbkey"
    -- The REPL (pipe mode) under --sandbox: prints objects, a failed call,
    -- and an error raised with the error table.
    local input = table.concat({
      ("do local f = io.open(%q, 'w') f:write(sandbox.api_key) f:close() end"):format(keyfile),
      "api",
      "api.numbers",
      "sandbox",
      "api.account.get()",
      "api.numbers.get('nope')",
      "assert(api.numbers.get('nope'))",
      "pivday.client{}",
      "print(select(2, api.numbers.purchase{}))",
    }, "\n") .. "\n"
    local out, rc = helper.sh(("printf '%%s' %s | %s --sandbox 2>&1"):format(helper.q(input), helper.q(helper.bin)))
    assert.equal(0, rc, out)
    local f = assert(io.open(keyfile))
    local key = f:read("a")
    f:close()
    assert.is_true(#key >= 16)
    assert.is_truthy(out:find("NUMBER_NOT_FOUND", 1, true), out)
    assert.is_nil(out:find(key, 1, true), "the REPL shows the API key:\n" .. out)

    -- A script with an explicit key that dies on an error: traceback on
    -- stderr, exit 1.
    local script = dir .. "/die.lua"
    local sf = assert(io.open(script, "w"))
    sf:write(([[
      local api = pivday.client{ api_key = %q, base_url = %q, max_retries = 0 }
      print(api, api.numbers)
      assert(api.numbers.get("nope"))
    ]]):format(KEY, "http://127.0.0.1:1/api/v1"))
    sf:close()
    local out2, rc2 = helper.sh(("%s %s 2>&1"):format(helper.q(helper.bin), helper.q(script)))
    assert.equal(1, rc2, out2)
    assert.is_truthy(out2:find("traceback", 1, true), out2)
    no_key(out2, "a failing script's output")
  end)
end)

describe("hardening: the key file and TLS #security", function()
  it("refuses a key file that group or others can read, takes a 0600 one", function()
    local d = tmpdir()
    assert(os.execute("mkdir -p " .. helper.q(d .. "/pivday")))
    local path = d .. "/pivday/key"
    local f = assert(io.open(path, "w"))
    f:write(KEY .. "\n")
    f:close()
    local script = ([[
      local api = pivday.client{ base_url = "http://127.0.0.1:1/api/v1", max_retries = 0 }
      local _, err = api.account.get()
      print(err and err.code, err and err.message)
    ]])
    local function run(mode)
      assert(os.execute(("chmod %s %s"):format(mode, helper.q(path))))
      return helper.sh(("env -u PIVDAY_API_KEY XDG_CONFIG_HOME=%s %s -e %s 2>&1")
        :format(helper.q(d), helper.q(helper.bin), helper.q(script)))
    end
    for _, mode in ipairs { "644", "640", "604", "660" } do
      local out = run(mode)
      assert.is_truthy(out:match("^INSECURE_KEY_FILE"), mode .. ": " .. out)
      no_key(out, "the refusal")
    end
    local out = run("600")
    assert.is_falsy(out:match("INSECURE_KEY_FILE"), out)
    assert.is_truthy(out:match("^COULDNT_CONNECT") or out:match("^[%u_]+"), out)  -- it got as far as connecting
    no_key(out, "a transport error")
    os.execute("rm -rf " .. helper.q(d))
  end)

  it("turns TLS verification off only with insecure = true, and says so once", function()
    local script = [[
      local r1 = pivday.http.request{ url = "https://127.0.0.1:1/", timeout = 2 }
      io.stderr:write("--mark--\n")
      pivday.http.request{ url = "https://127.0.0.1:1/", insecure = true, timeout = 2 }
      pivday.http.request{ url = "https://127.0.0.1:1/", insecure = true, timeout = 2 }
    ]]
    local out = helper.sh(("%s -e %s 2>&1"):format(helper.q(helper.bin), helper.q(script)))
    local before, after = out:match("^(.-)%-%-mark%-%-(.*)$")
    assert.is_truthy(before, out)
    assert.is_nil(before:find("WARNING", 1, true), "a warning without insecure")
    local _, n = after:gsub("TLS certificates and host names are NOT verified", "")
    assert.equal(1, n, out)
  end)

  it("has no other way to turn verification off", function()
    -- core/client.c touches the libcurl options only under the request's
    -- own `insecure` field (set by bindings from the Lua option alone).
    local out = helper.sh("grep -rn -B3 'SSL_VERIFYPEER\\|SSL_VERIFYHOST' core bindings")
    local n = 0
    for block in (out .. "\n--\n"):gmatch("(.-)\n%-%-\n") do
      n = n + 1
      assert.is_truthy(block:match("if %(req%->insecure%)"), "TLS verification changed outside `insecure`:\n" .. block)
    end
    assert.is_true(n >= 1)
    local b = helper.sh("grep -n 'insecure' bindings/client.c")
    assert.is_truthy(b:match('lua_getfield%(L, 1, "insecure"%)'), b)
    local lua_out = helper.sh("grep -rn 'insecure%s*=%s*true' lua/ | grep -v '^lua/pivday/http.lua'")
    assert.equal("", lua_out)
  end)
end)
