"""Per-notebook settings and the functions that stitch a lesson together."""
