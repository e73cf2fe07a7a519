"""Health collectors: each reads one kind of signal and returns a partial report section."""
