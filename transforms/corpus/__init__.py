"""The corpus: ingesting a drop as a version, reading a version back, the sample drop."""
