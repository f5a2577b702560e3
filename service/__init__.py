"""The HTTP API (FastAPI), its settings, database, storage and the CLI."""
