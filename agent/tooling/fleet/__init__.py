"""Fleet model rollout (``edge-agent fleet ...``): one model, many boxes, over the plant's MQTT broker.

The operator's command (:mod:`.rollout`) sends signed commands to each box's command topic
(``<prefix>/<device>/fleet/command``, :mod:`.wire`); a small companion process on every box
(``edge-agent fleet serve``, :mod:`.box`) verifies them (:mod:`.signing`), fetches the model from a plant-local
source, checks its sha256, runs the box's own promote gate (:mod:`agent.tooling.promote`) on its held-out data,
watches its live escalation rate (:mod:`.watch`) and answers on ``<prefix>/<device>/fleet/reply``. A canary box
first, then the rest; ``fleet rollback`` puts every box back. No scheduler, no membership: the manifest
(:mod:`.manifest`) names the boxes.
"""
