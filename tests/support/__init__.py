"""Fakes of the outside world we cannot reach (push providers), nothing else."""
