"""/api/health, /api/info and the Kubernetes probes."""
