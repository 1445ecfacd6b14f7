-- The README documents every method the catalogue makes, and its first two
-- commands are the ones CI and newcomers rely on.
local catalogue = require "pivday.catalogue"

describe("README.md", function()
  local f = assert(io.open("README.md"))
  local text = f:read("a")
  f:close()

  it("lists every client method", function()
    for _, ep in ipairs(catalogue.endpoints) do
      assert.truthy(text:find("`api." .. ep.id .. "(", 1, true), ep.id .. " is not in the README")
    end
  end)

  it("starts with make demo and make test", function()
    local first = text:match("```sh\n(.-)```")
    assert.matches("^make demo", first)
    assert.matches("\nmake test", first)
  end)
end)
