--- pivday sandbox: the local emulator as a service (see pivday.sandbox.main).
return require "pivday.sandbox"
