"""One module per revision, oldest first: ``v0001_runs``, ``v0002_leases``, ..."""
