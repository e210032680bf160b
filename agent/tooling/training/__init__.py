"""Offline fine-tuning of the prefilter models (``edge-agent models train``, scripts/train_*.py).

The dataset and base-model checks (``data``, ``base``) are pure Python on the
core dependencies and run before anything slow. Everything that needs the
``train`` extra (torch, torchvision, ultralytics, onnx) imports it inside the
functions that use it, so importing this package never loads torch and the
runtime agent never depends on it.

    data.py            which layout a dataset folder has; every label line checked
    base.py            what the base model is: an ONNX model (task, classes, input, INT8 or not), a .pt or
                       a model yaml
    newclasses.py      --new-classes, --time, --taxonomy: checks, the candidate's name and input size
    extras.py          is the train extra installed; ultralytics' offline settings
    onnx_weights.py    float weights of an ONNX file (QDQ INT8 weights dequantized)
    batchnorm.py       BatchNorms re-created under convolutions that had them folded in
    yolo_arch.py       the YOLOv8 architecture YAML; scale and activation read from a graph
    onnx_to_yolo.py    an exported YOLOv8 ONNX back into trainable ultralytics weights
    resnet.py          the frame classifier's network, data loading and export
    onnx_to_resnet.py  an exported classifier ONNX back into a trainable network
    detector.py        fine-tune the detector (ultralytics)
    classifier.py      fine-tune the classifier (plain torch)
    progress.py        one line per epoch, with ETA
    trained.py         what a fine-tune hands back
    card.py            the candidate's model card
    candidate.py       the whole ``models train`` run: checks, training, export, INT8 gate, card
"""
