"""Redis connectivity: URLs and their redaction, clients (plain and Sentinel),
the health of each path to Redis, the start-up check, and the embedded
redis-server an unconfigured instance runs.

:mod:`~feed.redisconn.url` is standard library only (the settings use it).
"""
