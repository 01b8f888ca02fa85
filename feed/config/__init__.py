"""Settings: every tunable declared once (env name, type, default, rule, doc).

Standard library only, so the Gunicorn master can validate before it forks.
Import from :mod:`feed.config.settings`.
"""
