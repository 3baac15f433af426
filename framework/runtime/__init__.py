"""What runs a saga, one concept per module, wired together by statesaga.engine.Engine:
`transaction` (the kernel around one event), `commands` (what operators ask), `jobs` (what a
worker claims, calls and settles), `handlers` (calling a handler), `observe` (waiting and
listeners), `admission` (checking a definition), `effects` and `guards` (what the tables
name), `heartbeat`, `recovery` and `outage`."""
