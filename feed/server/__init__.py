"""Running under Gunicorn: one worker's service and its lifecycle, metrics,
the access log, and what an unconfigured master starts (embedded Redis,
simulated exchange).
"""
