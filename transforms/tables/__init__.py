"""The metadata tables: Delta Lake tables, their schemas, the result store, the
transforms table and the Azure Table copy."""
