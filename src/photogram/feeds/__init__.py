"""Precomputed home feeds in Redis: fan-out on write, merged at read time for big accounts.
See docs/feeds.md."""
