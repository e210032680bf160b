"""``edge-agent dataset import``: labelled datasets from COCO, Pascal VOC, YOLO and CSV (see :mod:`.run`)."""
