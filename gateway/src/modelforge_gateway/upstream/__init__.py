"""Calls to the services that more than one slice makes (fetch a model, check a dataset digest,
start or read a job); the protobuf requests they send are built here. Imports no slice."""
