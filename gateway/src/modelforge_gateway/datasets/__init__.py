"""Datasets: upload, Hub registration, listing, insight and deletion."""
