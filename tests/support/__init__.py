"""Helpers shared by the test folders (import as ``tests.support.<module>``)."""
