"""Plumbing the public packages share (atomic files, on-disk arrays, progress lines, memory probes,
lazy exports, the old module names); nothing here is public API and any of it may change."""
