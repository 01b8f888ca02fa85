"""The election and everything under its fence.

Node ids (:mod:`~feed.election.identity`), the lock's Lua scripts and the
messages they publish (:mod:`~feed.election.lock`), the candidate's campaign
and lease (:mod:`~feed.election.candidate`), presence
(:mod:`~feed.election.presence`), the stand-in for running without an
election (:mod:`~feed.election.solo`), the fenced store
(:mod:`~feed.election.fence`) and the reaper of dead workers' locks
(:mod:`~feed.election.reaper`). Key names are neutral (:mod:`feed.keys`), and
so is the snapshot envelope (:mod:`feed.envelope`).

Nothing is imported here: the Gunicorn master imports the light modules
(identity) without pulling in redis.
"""
