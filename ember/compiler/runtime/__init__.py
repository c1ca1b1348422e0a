"""Running what the backend built: artifacts (save, load, run), crash isolation
of steps that may kill the interpreter, the storage of narrow types at the
run-time boundary, and runners for other devices (emulated AArch64, RPC)."""
