"""The lab: real marketfeed clusters on this machine, for notebooks, tests and benchmarks.

Not part of the service: nothing under ``feed/`` imports it, and it may use
the development dependencies (websocket-client, requests in threads,
matplotlib in notebooks). See docs/EXPERIMENTS.md.
"""
