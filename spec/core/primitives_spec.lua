-- pivday.core primitives the listener stands on, through their own surface:
-- durable files (sync, async sync, lock) and the lean server callback.
local pivday = require "pivday"
local core = require "pivday.core"
local async = require "pivday.async"

describe("pivday.core File", function()
  it("writes, syncs in the thread pool and locks", function()
    local path = os.tmpname()
    local f = assert(core.open_file(path, "w"))
    assert.is_true(f:write("one\n"))
    assert.is_true(f:sync())
    assert.is_true(f:write("two\n"))
    local done = pivday.cond()
    assert.truthy(f:sync_async(function(ok, err) done:signal(ok or err) end))
    assert.is_true(done:wait(5))
    assert.equal(8, f:size())
    local other = assert(core.open_file(path, "a"))
    assert.is_true(f:lock())
    assert.is_false(other:lock())
    f:close()
    assert.is_true(other:lock())
    other:close()
    local r = assert(io.open(path))
    assert.equal("one\ntwo\n", r:read("a"))
    r:close()
    os.remove(path)
    assert.has_error(function() f:write("x") end, "attempt to use a closed pivday.File")
  end)
end)

describe("pivday.core lean server", function()
  it("hands requests over as ids answered once", function()
    local seen
    local srv = assert(core.server({ lean = true }, function(id, method, path, body, peer)
      seen = { method = method, path = path, body = body, peer = peer }
      if path == "/drop" then
        core.server_drop(id)
      else
        assert(core.server_respond(id, 201, { ["x-a"] = 1 }, "ok " .. body))
        -- an id is answered once: a second answer is refused
        assert(not pcall(core.server_respond, id, 200, {}, "again"))
      end
    end))
    local url = "http://127.0.0.1:" .. srv:port()
    local res = assert(pivday.http.request{ method = "POST", url = url .. "/x", body = "hi" })
    assert.equal(201, res.status)
    assert.equal("ok hi", res.body)
    assert.equal("1", res.headers["x-a"])
    assert.same({ method = "POST", path = "/x", body = "hi", peer = "127.0.0.1" }, seen)
    local none, err = pivday.http.request{ url = url .. "/drop", timeout = 5 }
    assert.is_nil(none)
    assert.equal("transport", err.kind)
    srv:close()
    assert.equal(0, async.live())
  end)
end)
