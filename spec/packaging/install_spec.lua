-- `make install` / `make uninstall` into a staging directory (DESTDIR), the
-- LuaRocks-style directory variables, and the man page.  Nothing here needs
-- root or touches /usr/local: every file goes under a temporary DESTDIR.
local helper = require "helper"
local q = helper.q

local ROOT = (helper.sh("pwd")):gsub("%s+$", "")
-- make and its children run without the variables of an enclosing make
-- (a jobserver they cannot reach) or the sanitizer preloads of check-asan.
local CLEAN_ENV = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LD_PRELOAD"

local function make(args)
  return helper.sh(("cd %s && %s timeout 300 make --no-print-directory %s 2>&1")
    :format(q(ROOT), CLEAN_ENV, args))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function is_dir(path)
  local _, rc = helper.sh("test -d " .. q(path))
  return rc == 0
end

local function mode_of(path)
  local out = helper.sh("stat -c %a " .. q(path))
  return out:match("%d+")
end

-- Every Lua file of lua/pivday, relative to lua/ ("pivday/init.lua", ...).
local function lua_sources()
  local out = helper.sh(("cd %s/lua && find pivday -name '*.lua' | sort"):format(q(ROOT)))
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line end
  return list
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. q(d)))
  return d
end

describe("make install / uninstall", function()
  local dest, prefix, bin, libdir, luadir, mandir

  setup(function()
    dest = tmpdir()
    prefix = dest .. "/usr/local"
    bin = prefix .. "/bin/pivday"
    libdir = prefix .. "/lib/lua/5.4"
    luadir = prefix .. "/share/lua/5.4"
    mandir = prefix .. "/share/man/man1"
    local out, rc = make("install PREFIX=/usr/local DESTDIR=" .. q(dest))
    assert(rc == 0, "make install failed:\n" .. out)
  end)

  teardown(function()
    if dest then os.execute("rm -rf " .. q(dest)) end
  end)

  it("installs the binary, the C module, every Lua file and the man page under DESTDIR/PREFIX", function()
    assert.is_true(exists(bin))
    assert.equal("755", mode_of(bin))
    assert.is_true(exists(libdir .. "/pivday/core.so"))
    assert.is_true(exists(mandir .. "/pivday.1"))
    assert.equal("644", mode_of(mandir .. "/pivday.1"))
    local sources = lua_sources()
    assert.is_true(#sources > 10)
    for _, rel in ipairs(sources) do
      assert(exists(luadir .. "/" .. rel), rel .. " was not installed")
    end
    assert.equal("644", mode_of(luadir .. "/pivday/init.lua"))
    -- nothing lands outside DESTDIR/usr/local
    local top = helper.sh("ls " .. q(dest))
    assert.equal("usr", (top:gsub("%s+$", "")))
  end)

  it("the staged pivday finds its Lua files next to itself, with no environment", function()
    local out, rc = helper.sh(("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 %s -e %s 2>&1")
      :format(q(bin), q([[
        local p = require "pivday"
        print(p.version)
        print(package.searchpath("pivday", package.path))
        pivday.run(function() pivday.sleep(0.01) end)
        print("ran")
      ]])))
    assert.equal(0, rc, out)
    local version, found = out:match("^(%S+)\n(%S+)\nran\n$")
    assert.is_truthy(version, out)
    assert.equal(0, found:find(prefix .. "/bin/../share/lua/5.4/", 1, true) - 1,
      "loaded from " .. tostring(found))
  end)

  it("the staged pivday runs its subcommands", function()
    local out, rc = helper.sh(("cd / && env -u LUA_PATH -u LUA_CPATH %s call --help 2>&1"):format(q(bin)))
    assert.equal(0, rc, out)
    assert.truthy(out:find("usage: pivday call", 1, true))
    out, rc = helper.sh(("cd / && env -u LUA_PATH -u LUA_CPATH %s --sandbox call account.get -o json 2>/dev/null")
      :format(q(bin)))
    assert.equal(0, rc, out)
    assert.truthy(out:find('"balance"', 1, true))
  end)

  it("stock lua5.4 requires pivday from the staged share/ and lib/ directories", function()
    local env = ("LUA_PATH=%s LUA_CPATH=%s"):format(
      q(luadir .. "/?.lua;" .. luadir .. "/?/init.lua;;"), q(libdir .. "/?.so;;"))
    local out, rc = helper.sh(("cd / && %s %s lua5.4 -e %s 2>&1"):format(CLEAN_ENV, env, q([[
      local p = require "pivday"
      print(package.searchpath("pivday", package.path))
      print(package.searchpath("pivday.core", package.cpath))
      p.run(function() p.sleep(0.01) end)
      print(p.json.encode(p.json.array{}))
    ]])))
    assert.equal(0, rc, out)
    local lua_file, so, arr = out:match("^(%S+)\n(%S+)\n(%S+)\n$")
    assert.equal(luadir .. "/pivday/init.lua", lua_file, out)
    assert.equal(libdir .. "/pivday/core.so", so)
    assert.equal("[]", arr)
  end)

  it("make uninstall with the same DESTDIR removes what install put there", function()
    local out, rc = make("uninstall PREFIX=/usr/local DESTDIR=" .. q(dest))
    assert.equal(0, rc, out)
    assert.is_false(exists(bin))
    assert.is_false(exists(libdir .. "/pivday/core.so"))
    assert.is_false(is_dir(libdir .. "/pivday"))
    assert.is_false(is_dir(luadir .. "/pivday"))
    assert.is_false(exists(mandir .. "/pivday.1"))
    local left = helper.sh(("find %s -type f"):format(q(dest)))
    assert.equal("", left)
  end)
end)

describe("make install with the directories LuaRocks passes", function()
  it("honours BINDIR, LIBDIR and LUADIR over PREFIX", function()
    local dest = tmpdir()
    local out, rc = make(("install PREFIX=/rock DESTDIR=%s BINDIR=/rock/b LIBDIR=/rock/c LUADIR=/rock/l")
      :format(q(dest)))
    local ok, err = pcall(function()
      assert.equal(0, rc, out)
      assert.is_true(exists(dest .. "/rock/b/pivday"))
      assert.is_true(exists(dest .. "/rock/c/pivday/core.so"))
      assert.is_true(exists(dest .. "/rock/l/pivday/init.lua"))
      assert.is_true(exists(dest .. "/rock/l/pivday/cli/doctor.lua"))
      assert.is_false(is_dir(dest .. "/rock/share/lua"))
      out, rc = make(("uninstall PREFIX=/rock DESTDIR=%s BINDIR=/rock/b LIBDIR=/rock/c LUADIR=/rock/l")
        :format(q(dest)))
      assert.equal(0, rc, out)
      assert.equal("", (helper.sh(("find %s -type f"):format(q(dest)))))
    end)
    os.execute("rm -rf " .. q(dest))
    assert(ok, err)
  end)
end)

describe("pivday.1", function()
  it("renders with groff without a warning", function()
    local _, has = helper.sh("command -v groff >/dev/null")
    if has ~= 0 then
      pending("groff is not installed (apt-get install groff-base)")
      return
    end
    local out, rc = helper.sh(("groff -man -Tutf8 -ww %s 2>&1 >/dev/null"):format(q(ROOT .. "/pivday.1")))
    assert.equal(0, rc, out)
    assert.equal("", out)
  end)

  it("documents every subcommand, the environment and the exit codes", function()
    local f = assert(io.open(ROOT .. "/pivday.1"))
    local s = f:read("a")
    f:close()
    for _, w in ipairs { "call", "doctor", "listen", "events", "trigger", "sandbox",
      "PIVDAY_API_KEY", "PIVDAY_BASE_URL", "PIVDAY_DEBUG", "PIVDAY_SANDBOX_SPEED",
      "pivday/key", ".SH SYNOPSIS", ".SH OPTIONS", ".SH ENVIRONMENT", ".SH FILES",
      ".SH EXIT STATUS", ".SH EXAMPLES" } do
      assert(s:find(w, 1, true), "pivday.1 does not mention " .. w)
    end
  end)
end)
