"""What runs a saga, one concept per module, all of them taking one `runtime.Runtime` value
(the ports, registry, compiled lifecycles, telemetry, heartbeats, probe) and none of them the
Engine, which is a facade built on it (statesaga.engine): `transaction` (the kernel around
one event), `commands` (what operators ask), `jobs` (what a worker claims, calls and
settles), `handlers` (calling a handler), `observe` (waiting and listeners), `admission`
(checking a definition), `effects` and `guards` (what the tables name), `heartbeat`, `clock`,
`recovery` (through the Engine's public API) and `outage`; and `cpu`, which takes no
Runtime: where the process running them runs (one CPU of its own)."""
