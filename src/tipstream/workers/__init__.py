"""Background work: the dramatiq broker (Valkey through redis-py), actor modules, and the
periodic scheduler that `tipctl run worker` runs beside the dramatiq worker threads."""
