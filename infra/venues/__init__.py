"""Execution venue adapters: the simulated venue (:mod:`infra.venues.simulated`); the ProjectX adapter lives in :mod:`infra.projectx`."""
