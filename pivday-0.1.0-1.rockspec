-- pivday as a rock: `luarocks --lua-version=5.4 make pivday-0.1.0-1.rockspec`
-- from a checkout builds with the project's Makefile and installs the Lua
-- files, the C module (pivday.core) and the `pivday` executable into the
-- LuaRocks tree.  Written for Debian's luarocks 3.8 and works offline:
--  * build type "make", not "builtin": builtin cannot build an executable;
--  * external dependencies are found by library file, not header: Debian
--    keeps some headers under multiarch paths that LuaRocks does not search
--    (the Makefile asks pkg-config for the real flags);
--  * the test type is "command", not "busted": the busted type would try to
--    download busted, while Debian's lua-busted is already installed.
rockspec_format = "3.0"
package = "pivday"
version = "0.1.0-1"

source = {
  -- `luarocks make` builds the checkout it runs in and fetches nothing.
  -- Placeholder: there is no public repository or source archive yet, so
  -- `luarocks install pivday` / `luarocks pack` cannot work until it is set.
  url = "git+https://example.invalid/pivday.git",
}

description = {
  summary = "Script the piv.day REST API from Lua 5.4: client, webhooks, flows, sandbox",
  detailed = [[
A C core (libcurl multi on libuv, an llhttp server) with Lua 5.4 bindings and
a Lua library for the piv.day Business API: virtual numbers, SMS, Google QR
verification, residential proxies, domains and DNS, generated sites and
webhooks. Includes a local emulator of the API (the sandbox) and the
`pivday` command (scripts, REPL, `call`, `listen`, `doctor`, ...).
]],
  homepage = "https://piv.day",
  license = "MIT",
  labels = { "api", "http", "webhooks", "libuv", "curl" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
  -- lua-cjson is needed at run time too, but it is not listed here: Debian
  -- ships it as the package lua-cjson (which `make deps` installs), it is
  -- not registered as a rock, and listing it would make LuaRocks download
  -- and build a second copy from the network.
}

external_dependencies = {
  CURL = { library = "curl" },
  UV = { library = "uv" },
}

build = {
  type = "make",
  -- The Makefile builds build/pivday/core.so and build/bin/pivday; its
  -- install target honours the directories LuaRocks chooses.
  build_variables = {
    CFLAGS = "$(CFLAGS)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}

test = {
  type = "command",
  command = "make test-only",
}
