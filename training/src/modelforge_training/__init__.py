"""The training runtime: runs one fine-tuning job from a job file (`python -m modelforge_training job.json`),
the process trainer-svc's supervisor launches and a Kubeflow pod's torchrun starts.

It imports torch and the Hugging Face stack, and knows nothing of gRPC, NATS or trainer-svc: it reads a
job file and writes events to the sink it is given (events.py). Nothing heavy is imported here: the
service imports the light modules (protocol, config, lifeline, strategies' catalogue, tasks), and the
runtime must import unsloth before transformers when a job uses that provider.
"""
