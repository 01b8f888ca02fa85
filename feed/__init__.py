"""marketfeed: market data to WebSocket clients, fetched by one elected node.

The library under the service: settings, the Redis election with its fencing
epoch, the snapshot store, the per-process node loop, upstream providers, the
simulated exchange, the per-worker hub and the lab harness.
"""

__version__ = "0.1.0"
