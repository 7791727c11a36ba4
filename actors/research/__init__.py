"""Research tools on the trading node's backtest: parameter sweeps and walk-forward (docs/research.md)."""
