"""Model evaluation: detection and classification metrics (pure numpy), reading a
YOLO-format labelled dataset or a classify folder dataset, and the eval.json /
report.html reports."""

from agent.evaluation.classification import ClassificationMetrics, ClassScores, evaluate_classification
from agent.evaluation.classify_dataset import (
    ClassifiedImage,
    ClassifyDataset,
    TriageSummary,
    evaluate_classifier,
    read_classify_dataset,
    triage_summary,
)
from agent.evaluation.classify_report import ClassifyEvalContext, write_classification_report
from agent.evaluation.dataset import LabelledImage, YoloDataset, evaluate_detector, read_yolo_dataset
from agent.evaluation.detection import (
    IOU_THRESHOLDS,
    ClassMetrics,
    DetectionEvaluator,
    DetectionMetrics,
    compute_ap,
    match_predictions,
)
from agent.evaluation.report import EvalContext, ReportFiles, write_detection_report

__all__ = [
    "IOU_THRESHOLDS",
    "ClassMetrics",
    "ClassScores",
    "ClassificationMetrics",
    "ClassifiedImage",
    "ClassifyDataset",
    "ClassifyEvalContext",
    "DetectionEvaluator",
    "DetectionMetrics",
    "EvalContext",
    "LabelledImage",
    "ReportFiles",
    "TriageSummary",
    "YoloDataset",
    "compute_ap",
    "evaluate_classification",
    "evaluate_classifier",
    "evaluate_detector",
    "match_predictions",
    "read_classify_dataset",
    "read_yolo_dataset",
    "triage_summary",
    "write_classification_report",
    "write_detection_report",
]
