"""The election and everything under its fence.

Key names (:mod:`~feed.election.keys`), node ids (:mod:`~feed.election.identity`),
the lock's Lua scripts and the messages they publish (:mod:`~feed.election.lock`),
the candidate's campaign and lease (:mod:`~feed.election.candidate`), the
stand-in for running without an election (:mod:`~feed.election.solo`), the
snapshot envelope (:mod:`~feed.election.envelope`) and the fenced store
(:mod:`~feed.election.fence`), the reaper of dead workers' locks
(:mod:`~feed.election.reaper`) and the cluster view (:mod:`~feed.election.cluster`).

Nothing is imported here: the Gunicorn master imports the light modules
(keys, identity) without pulling in redis.
"""
