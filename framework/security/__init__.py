"""What may come in: the operator's handler allow-list, the size limits, and secrets kept out of
every output."""
