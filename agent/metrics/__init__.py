"""What the gateway exposes on ``/metrics`` (:mod:`.gateway`). The agent's metrics, the exposition, the
histograms and the HTTP endpoint are in :mod:`agent.ops`."""
