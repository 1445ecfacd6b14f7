-- pivday.core primitives the listener stands on, through their own surface:
-- durable files (sync, async sync, lock). The webhook listener's Hook and
-- Window: spec/webhooks/hook_spec.lua.
local pivday = require "pivday"
local core = require "pivday.core"

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

  it("writes several strings in order with one call, and refuses a non-string before writing any", function()
    local path = os.tmpname()
    local f = assert(core.open_file(path, "w"))
    local parts = {}
    for i = 1, 150 do parts[i] = ("%d,"):format(i) end -- more than one writev's worth
    parts[#parts + 1] = ""
    parts[#parts + 1] = ("x"):rep(100000)
    assert.is_true(f:write(table.unpack(parts)))
    assert.has_error(function() f:write("never", {}) end)
    assert.is_true(f:write())
    f:close()
    local r = assert(io.open(path))
    assert.equal(table.concat(parts), r:read("a"))
    r:close()
    os.remove(path)
  end)
end)
