"""Local tooling: tiny offline models and datasets, the stack launcher, the demo."""
