-- luacheck configuration (`make lint`; Debian's lua-check).
std = "lua54"
max_line_length = 140
-- Unused arguments are part of callback signatures (handlers, iterators,
-- pcall'd functions); unused loop variables and `self` likewise.
unused_args = false
exclude_files = { "build/**" }

files["spec/**/*_spec.lua"] = { std = "+busted" }
-- Data tables: one endpoint or one limit per line reads better than
-- wrapped.
files["lua/pivday/catalogue.lua"] = { max_line_length = false }
files["lua/pivday/sandbox/policy.lua"] = { max_line_length = false }
-- Reviewed, not bugs: an initial value later overwritten on every path
-- (jobs.lua `new`), a flag kept up to date past its last use (webhooks.lua
-- `seen` in _dispatch, repl.lua `interactive`), and a local `path` that
-- shadows the module's on purpose in webhooks.new.
files["lua/pivday/sandbox/jobs.lua"] = { ignore = { "311" } }
files["lua/pivday/repl.lua"] = { ignore = { "311" } }
files["lua/pivday/webhooks.lua"] = { ignore = { "311", "431" } }
files["spec/helper.lua"] = { globals = { "spec_helper" } }
-- The fuzz harness gets fuzz_abort from its C host.
files["spec/fuzz/webhooks_harness.lua"] = { read_globals = { "fuzz_abort" } }
-- Scripts run by the `pivday` host, which provides the global `pivday`.
files["scripts/**/*.lua"] = { read_globals = { "pivday" } }
files["spec/hardening/soak_listener.lua"] = { read_globals = { "pivday" } }
files["bench/**/*.lua"] = { read_globals = { "pivday" } }
