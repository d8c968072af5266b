"""Capture reading, TCP, phases, correlation, pipeline and command line."""
