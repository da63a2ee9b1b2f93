"""Side-by-side benchmarks: what ModelForge costs over the libraries it wraps (`make bench`).

Every benchmark runs its baseline (plain trl, direct gRPC, plain `model.generate`) and the ModelForge
path alternately on one machine, against one stack started on free loopback ports, and reports
medians, p99 where it applies and the median ratio, with each goal marked met or not met.
"""
