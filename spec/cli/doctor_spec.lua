-- `pivday doctor` as a process against sandboxes on 127.0.0.1, plus its
-- shape comparison as a unit.  Background processes are started here with
-- their PID (under `timeout`, so none outlives the run) and stopped by it.
local pivday = require "pivday"
local doctor = require "pivday.cli.doctor"
local helper = require "helper"
local q, t = helper.q, helper.t

local BIN = helper.bin
local UNREACHABLE = "PIVDAY_BASE_URL=http://127.0.0.1:1/api/v1"

-- Runs pivday with ARGS (and an environment prefix); stdout+stderr, code.
local function run(env, args)
  return helper.sh(("env -u PIVDAY_API_KEY -u PIVDAY_BASE_URL -u PIVDAY_DEBUG %s timeout 60 %s %s 2>&1")
    :format(env or "", q(BIN), args))
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Starts `pivday ARGS` in the background; returns its PID.
local function start(args, out)
  local s = helper.sh(("env -u PIVDAY_API_KEY -u PIVDAY_BASE_URL timeout 60 %s %s >%s 2>&1 & echo $!")
    :format(q(BIN), args, q(out)))
  return assert(tonumber(s:match("(%d+)")))
end

local function wait_for(path, pattern)
  local deadline = pivday.now() + t(10)
  while pivday.now() < deadline do
    local s = read_file(path)
    if s and s:match(pattern) then return s:match(pattern) end
    pivday.sleep(0.02)
  end
  error(("no %q in %s:\n%s"):format(pattern, path, tostring(read_file(path))))
end

-- The status of the check NAME in doctor's output ("ok", "warn", "fail").
local function status_of(out, name)
  for line in out:gmatch("[^\n]+") do
    local st, n = line:match("^(%a+)%s+(%S+)")
    if n == name then return st, line end
  end
end

describe("pivday doctor", function()
  local dir, pids

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
    pids = {}
  end)

  after_each(function()
    for _, pid in ipairs(pids) do os.execute(("kill %d 2>/dev/null"):format(pid)) end
    os.execute("rm -rf " .. q(dir))
  end)

  it("--help prints its usage and exits 0", function()
    local out, rc = run(nil, "doctor --help")
    assert.equal(0, rc, out)
    assert.truthy(out:find("usage: pivday doctor", 1, true))
    assert.truthy(out:find("--contract", 1, true))
  end)

  it("rejects unknown options with exit code 2", function()
    local out, rc = run(nil, "doctor --bogus")
    assert.equal(2, rc, out)
    out, rc = run(nil, "doctor --timeout nope")
    assert.equal(2, rc, out)
  end)

  it("under --sandbox every check runs and none fails", function()
    local out, rc = run(nil, "--sandbox doctor --listener http://127.0.0.1:1/")
    assert.equal(0, rc, out)
    for _, name in ipairs { "key", "base_url", "auth", "clock", "json", "versions" } do
      assert.equal("ok", status_of(out, name), out)
    end
    local st, line = status_of(out, "base_url")
    assert.truthy(line:find("SANDBOX http://127.0.0.1:%d+/api/v1: GET /account answered 200 in %d+ ms"), line)
    assert.equal("ok", st)
    -- nothing listens on port 1: a warning, not a failure
    assert.equal("warn", status_of(out, "listener"), out)
    assert.truthy(out:find("\n%d+ ok, 1 warn, 0 fail\n"), out)
    for line in out:gmatch("[^\n]+") do
      assert(line:match("^ok  ") or line:match("^warn") or line:match("^fail")
        or line:match("^%d+ ok") or line:match("^pivday: SANDBOX"), "unexpected line: " .. line)
    end
  end)

  it("--contract under --sandbox reports no drift", function()
    local out, rc = run(nil, "--sandbox doctor --contract --listener http://127.0.0.1:1/")
    assert.equal(0, rc, out)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      if line:match("^%a+%s+contract") then
        n = n + 1
        assert.truthy(line:match("^ok%s+contract%s+[%w_.]+: same shape as the sandbox$"), line)
      end
    end
    assert.equal(#doctor.CONTRACT_CALLS, n)
    assert.falsy(out:find("drift", 1, true))
  end)

  it("--contract against a sandbox process as the live service reports no drift", function()
    local log = dir .. "/sandbox.log"
    pids[#pids + 1] = start("sandbox --port 0", log)
    local base = wait_for(log, "base_url: (http://127%.0%.0%.1:%d+/api/v1)")
    local key = wait_for(log, "api_key: (%S+)")
    local out, rc = run(("PIVDAY_BASE_URL=%s PIVDAY_API_KEY=%s"):format(q(base), q(key)),
      "doctor --contract --listener http://127.0.0.1:1/")
    assert.equal(0, rc, out)
    assert.equal("ok", status_of(out, "auth"), out)
    local _, line = status_of(out, "base_url")
    assert.truthy(line:find("LIVE " .. base, 1, true), line)
    assert.falsy(out:find("drift", 1, true), out)
    assert.falsy(out:find(key, 1, true), "the key was printed")
  end)

  it("says what answers on the listener's address", function()
    local log = dir .. "/listen.log"
    pids[#pids + 1] = start("listen --port 0", log)
    local url = wait_for(log, "(http://127%.0%.0%.1:%d+/hooks/%x+)")
    local out, rc = run(nil, "--sandbox doctor --listener " .. q(url))
    assert.equal(0, rc, out)
    local st, line = status_of(out, "listener")
    assert.equal("ok", st, out)
    assert.truthy(line:find("is a pivday listener", 1, true), line)
    local root = url:match("^(http://[^/]+)")
    out = run(nil, "--sandbox doctor --listener " .. q(root .. "/"))
    st, line = status_of(out, "listener")
    assert.equal("ok", st, out)
    assert.truthy(line:find("404", 1, true), line)
  end)

  it("an unreachable base URL fails and exits non-zero", function()
    local out, rc = run(UNREACHABLE .. " PIVDAY_API_KEY=x", "doctor --listener http://127.0.0.1:1/")
    assert.equal(1, rc, out)
    local st, line = status_of(out, "base_url")
    assert.equal("fail", st, out)
    assert.truthy(line:find("COULDNT_CONNECT", 1, true), line)
    assert.equal("ok", status_of(out, "key"))
    assert.equal("warn", status_of(out, "clock"))
  end)

  it("never prints the key, and refuses a key file others can read", function()
    local secret = "pd_live_doctor_spec_secret_4242"
    local out = run(UNREACHABLE .. " PIVDAY_API_KEY=" .. secret, "doctor --listener http://127.0.0.1:1/")
    assert.falsy(out:find(secret, 1, true), out)
    assert.truthy(select(2, status_of(out, "key")):find("PIVDAY_API_KEY", 1, true))

    local keydir = dir .. "/home/.config/pivday"
    assert(os.execute("mkdir -p " .. q(keydir)))
    local f = assert(io.open(keydir .. "/key", "w"))
    f:write(secret, "\n")
    f:close()
    assert(os.execute("chmod 644 " .. q(keydir .. "/key")))
    local env = ("HOME=%s XDG_CONFIG_HOME= %s"):format(q(dir .. "/home"), UNREACHABLE)
    out = run(env, "doctor --listener http://127.0.0.1:1/")
    local st, line = status_of(out, "key")
    assert.equal("fail", st, out)
    assert.truthy(line:find("mode 644", 1, true), line)
    assert.falsy(out:find(secret, 1, true))

    assert(os.execute("chmod 600 " .. q(keydir .. "/key")))
    out = run(env, "doctor --listener http://127.0.0.1:1/")
    st, line = status_of(out, "key")
    assert.equal("ok", st, out)
    assert.truthy(line:find("mode 600", 1, true), line)
    assert.falsy(out:find(secret, 1, true))

    os.remove(keydir .. "/key")
    out = run(env, "doctor --listener http://127.0.0.1:1/")
    assert.equal("fail", (status_of(out, "key")), out)
  end)
end)

describe("pivday doctor internals", function()
  it("shape/diff: equal shapes give no drift; list items are merged", function()
    local a = { x = 1, l = { { id = "a", n = 1.5 }, { id = "b", extra = true } } }
    local b = { x = 2.5, l = { { id = "c", n = 2, extra = false } } }
    assert.same({}, doctor.diff(doctor.shape(a), doctor.shape(b)))
  end)

  it("shape/diff: type changes and key-set changes are drift", function()
    local live = { balance = "12.5", user = { id = 1, new_field = "x" }, items = { { a = 1 } } }
    local ref = { balance = 12.5, user = { id = 2, email = "e" }, items = { { a = "1" } } }
    local d = doctor.diff(doctor.shape(live), doctor.shape(ref))
    assert.same({
      "balance: live string, sandbox number",
      "items[].a: live number, sandbox string",
      "user.email: only in the sandbox",
      "user.new_field: only live",
    }, d)
  end)

  it("shape/diff: empty lists and nulls match anything", function()
    local json = require "pivday.json"
    local live = { numbers = {}, pagination = { total = 0 }, note = json.null }
    local ref = { numbers = { { id = "x" } }, pagination = { total = 3 }, note = "text" }
    assert.same({}, doctor.diff(doctor.shape(live), doctor.shape(ref)))
    assert.same({ "$: live array, sandbox object" },
      doctor.diff(doctor.shape({ 1 }), doctor.shape({ a = 1 })))
  end)

  it("reads HTTP dates", function()
    assert.equal(784111777, doctor.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.is_nil(doctor.parse_http_date("yesterday"))
    assert.is_nil(doctor.parse_http_date(nil))
  end)
end)
