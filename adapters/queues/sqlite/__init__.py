"""The SQLite queue (`sqlq://`): queue keeps jobs in a SQLite store's file, worker claims and
runs them."""
