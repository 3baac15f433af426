"""Charts: state tables as data, compiled to `transitions` machines.

spec.py is the YAML format (pydantic models, published as chart.schema.json); checks.py the
rules a table must satisfy as a whole graph, one named function each; extend.py merges a chart
into the shipped lifecycle it extends; chart.py is the Chart and how one is loaded; lifecycles.py
the shipped workflow, step and todo lifecycles; machine.py compiles a Chart and fires triggers.
"""
