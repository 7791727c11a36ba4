"""Execution state machines hosted as actors: the order router and the reconciler. They reach the
outside world only through the ports of :mod:`domain.ports`."""
