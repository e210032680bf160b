"""Service health: the systemd notification protocol (:mod:`.notify`), the stage-progress rule that
the watchdog and ``/healthz`` share (:mod:`.stages`), the supervisor thread that sends READY, WATCHDOG
and STATUS (:mod:`.supervisor`), the agent's and the gateway's use of them (:mod:`.agent`,
:mod:`.gateway`), and ``edge-agent doctor``'s checks (:mod:`.doctor`)."""
