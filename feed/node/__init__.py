"""One process's node: the election plus the leader's or the follower's work.

:mod:`~feed.node.node` composes them and owns the one path by which a
snapshot reaches the listener; :mod:`~feed.node.leader` fetches and
publishes under the fence; :mod:`~feed.node.follower` receives what the
leader publishes.
"""
