"""Charts: state tables as data (the schema, the graph checks, loading and extension), compiled to
`transitions` machines; the shipped lifecycles (workflow, step, todo)."""
