"""The training service: queues jobs, launches the training runtime (modelforge_training) for each in a
process of its own, and publishes their progress. It imports no torch stack."""
