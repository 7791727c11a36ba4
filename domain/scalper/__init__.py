"""ML scalper (seed 003, /work/shared/seeds/003_42bd756451187795.txt): bar features in :mod:`domain.scalper.features`."""
