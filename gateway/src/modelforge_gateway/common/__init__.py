"""Shared kit of the slices: request-body rules, protobuf helpers and the records more than one
slice answers with (models, job events, training settings). Imports no slice."""
