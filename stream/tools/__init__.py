"""User-facing tools built on the library: produce, demo, bench, servebench."""
