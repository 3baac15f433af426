"""Definitions: a saga written as a table of steps, validated and loaded.

spec.py is the YAML format (pydantic models, published as definition.schema.json) and what each
step waits for; inputs.py the input schema (a JSON Schema subset) and the check of a value
against it; params.py the `${...}` references in a step's params and their resolution;
checks.py the rules a saga's table must satisfy as a whole, one named function each; load.py
the WorkflowDefinition and how one is loaded from a file or a dict.
"""
