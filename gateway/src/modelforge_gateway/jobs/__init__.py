"""The jobs API beside the seed endpoints: queue a job, list, read, cancel."""
