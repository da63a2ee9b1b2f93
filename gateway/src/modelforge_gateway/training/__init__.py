"""rest-api.md training endpoints: start, status, stop."""
