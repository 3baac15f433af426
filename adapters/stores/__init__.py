"""Stores (statesaga.ports.Store): document is the shared algorithm and the public base a plugin
store subclasses; memory, sqlite, redis and arango implement its few backend primitives."""
