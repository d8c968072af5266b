"""Renderers: an Analysis in, text/HTML/JSON/CSV out. Nothing here decides anything."""
