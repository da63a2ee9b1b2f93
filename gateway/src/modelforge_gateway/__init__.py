"""Public REST/WebSocket API; translates to gRPC calls to the services."""
