"""Training events: WS /ws/training, a job's stored events and their Server-Sent Events stream."""
