"""Runnable dspex examples (a package so workers can import example modules by path)."""
