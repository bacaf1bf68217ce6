"""The metadata tables: Delta Lake tables, their schemas, and the stores built on them."""
