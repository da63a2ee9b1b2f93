"""The training worker: runs one job in its own process (`python -m modelforge_trainer.worker`).

Nothing heavy is imported here: the service imports worker.protocol, and the worker must be able to
import unsloth before transformers when a job uses that provider.
"""
