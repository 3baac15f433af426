"""How messages count things: "1 attempt", "3 attempts", never "attempt(s)"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n noun`, the noun in the plural unless n is 1 (`plural` when it is not noun + "s")."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
