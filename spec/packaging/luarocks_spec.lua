-- `luarocks make` of pivday-0.1.0-1.rockspec into a temporary tree, from a
-- copy of the checkout (so the build tree of the other specs is left
-- alone), with nothing fetched; then `require "pivday"` from that tree.
-- luarocks comes from Debian (`make deps` installs it).
local helper = require "helper"
local q = helper.q

local ROOT = (helper.sh("pwd")):gsub("%s+$", "")
local ROCKSPEC = "pivday-0.1.0-1.rockspec"
-- No variables of an enclosing make, no sanitizer preloads; a parallel
-- build keeps this spec near 10 s.
local CLEAN_ENV = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

describe("the rockspec", function()
  it("is for Debian's luarocks: make build type, external deps by library, a command test", function()
    local env = {}
    local chunk = assert(loadfile(ROOT .. "/" .. ROCKSPEC, "t", env))
    chunk()
    assert.equal("pivday", env.package)
    assert.equal("0.1.0-1", env.version)
    assert.equal("make", env.build.type)
    assert.same({ library = "curl" }, env.external_dependencies.CURL)
    assert.same({ library = "uv" }, env.external_dependencies.UV)
    assert.equal("command", env.test.type)
    -- only lua itself: anything else would be downloaded
    assert.same({ "lua >= 5.4, < 5.5" }, env.dependencies)
    for _, v in ipairs { "PREFIX", "LUADIR", "LIBDIR", "BINDIR" } do
      assert.equal("$(" .. v .. ")", env.build.install_variables[v])
    end
  end)
end)

describe("luarocks make", function()
  local work, tree

  setup(function()
    work, tree = tmpdir(), tmpdir()
  end)

  teardown(function()
    os.execute(("rm -rf %s %s"):format(q(work), q(tree)))
  end)

  it("builds and installs into a fresh tree, offline; require and the binary work from it", function()
    local _, has = helper.sh("command -v luarocks >/dev/null")
    assert(has == 0, "luarocks is not installed (make deps installs it)")
    -- the checkout without its build output
    local out, rc = helper.sh(("cd %s && tar --exclude=./build --exclude=./.git -cf - . | tar -C %s -xf - 2>&1")
      :format(q(ROOT), q(work)))
    assert.equal(0, rc, out)
    -- --only-server with an unreachable address: any download attempt fails
    -- loudly instead of reaching the network.
    out, rc = helper.sh(("cd %s && %s MAKEFLAGS=-j4 timeout 300 luarocks --lua-version=5.4 "
      .. "--only-server=http://127.0.0.1:1/ make --tree=%s %s 2>&1")
      :format(q(work), CLEAN_ENV, q(tree), ROCKSPEC))
    assert.equal(0, rc, out)
    assert.truthy(out:find("pivday 0.1.0-1 is now installed", 1, true), out)

    local paths = helper.sh(("luarocks --lua-version=5.4 --tree=%s path --lr-path"):format(q(tree)))
      :gsub("%s+$", "")
    local cpaths = helper.sh(("luarocks --lua-version=5.4 --tree=%s path --lr-cpath"):format(q(tree)))
      :gsub("%s+$", "")
    assert.truthy(paths:find(tree, 1, true))
    out, rc = helper.sh(("cd / && %s LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s 2>&1"):format(
      CLEAN_ENV, q(paths .. ";;"), q(cpaths .. ";;"), q([[
        local p = require "pivday"
        print(package.searchpath("pivday", package.path))
        print(package.searchpath("pivday.core", package.cpath))
        p.run(function() p.sleep(0.01) end)
        print(p.version)
      ]])))
    assert.equal(0, rc, out)
    local lua_file, so, version = out:match("^(%S+)\n(%S+)\n(%S+)\n$")
    assert.equal(tree .. "/share/lua/5.4/pivday/init.lua", lua_file, out)
    assert.equal(tree .. "/lib/lua/5.4/pivday/core.so", so)
    assert.equal("0.1.0", version)

    -- the deployed binary finds the tree's Lua files by itself
    out, rc = helper.sh(("cd / && %s %s -e %s 2>&1"):format(CLEAN_ENV, q(tree .. "/bin/pivday"),
      q([[print(package.searchpath("pivday", package.path))]])))
    assert.equal(0, rc, out)
    assert.equal(tree .. "/bin/../share/lua/5.4/pivday/init.lua\n", out)

    out, rc = helper.sh(("%s luarocks --lua-version=5.4 --tree=%s list --porcelain 2>&1"):format(CLEAN_ENV, q(tree)))
    assert.equal(0, rc, out)
    assert.truthy(out:find("pivday\t0.1.0-1\tinstalled", 1, true), out)
  end)
end)
