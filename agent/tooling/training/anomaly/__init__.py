"""``models train --task anomaly``: a good-parts-only anomaly model (DRAEM-style: a small fully convolutional
segmentation net trained to find generic synthetic anomalies pasted on good frames).

    synth.py    generic synthetic anomalies (numpy + OpenCV)
    data.py     the good set: folders or a recorder's VLM-passed frames; the checks with their numbers
    net.py      the network and its export wrapper (torch)
    fit.py      the training loop
    export.py   ONNX export with the agent's metadata; the threshold set afterwards
    valset.py   the labelled validation set written for the threshold report and the INT8 gate
    run.py      the command's order and checks; steps.py the slow part; card.py the model card
"""
