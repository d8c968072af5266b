"""tdslens: what went wrong on the wire between a SQL Server client and its server.

The code lives in three layers (see docs/architecture.md):
``tdslens.analyzer`` reads captures, rebuilds TCP streams, correlates and diagnoses;
``tdslens.dissectors`` turns bytes into protocol events (sans-IO);
``tdslens.reports`` renders an analysis for people and machines.
"""

__version__ = "0.1.0"
