"""The bundled web UI: page routes, templates and static files."""
