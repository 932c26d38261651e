"""Detection logic: pure functions over polars frames (no database, no clock)."""
