from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASS: _ClassVar[Verdict]
    VERDICT_DEFECT: _ClassVar[Verdict]
    VERDICT_UNCERTAIN: _ClassVar[Verdict]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_LOW: _ClassVar[Severity]
    SEVERITY_MEDIUM: _ClassVar[Severity]
    SEVERITY_HIGH: _ClassVar[Severity]
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASS: Verdict
VERDICT_DEFECT: Verdict
VERDICT_UNCERTAIN: Verdict
SEVERITY_UNSPECIFIED: Severity
SEVERITY_LOW: Severity
SEVERITY_MEDIUM: Severity
SEVERITY_HIGH: Severity

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("label", "confidence", "box")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    box: Box
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class Crop(_message.Message):
    __slots__ = ("image", "box", "label", "confidence")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    box: Box
    label: str
    confidence: float
    def __init__(self, image: _Optional[bytes] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("device_id", "camera_id", "frame_sequence", "event_id", "image", "source_width", "source_height", "detections", "crops", "template_id", "prefilter_model")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PREFILTER_MODEL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    camera_id: str
    frame_sequence: int
    event_id: str
    image: bytes
    source_width: int
    source_height: int
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    crops: _containers.RepeatedCompositeFieldContainer[Crop]
    template_id: str
    prefilter_model: str
    def __init__(self, device_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., frame_sequence: _Optional[int] = ..., event_id: _Optional[str] = ..., image: _Optional[bytes] = ..., source_width: _Optional[int] = ..., source_height: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., crops: _Optional[_Iterable[_Union[Crop, _Mapping]]] = ..., template_id: _Optional[str] = ..., prefilter_model: _Optional[str] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("label", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class Defect(_message.Message):
    __slots__ = ("type", "location", "severity")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    type: str
    location: str
    severity: Severity
    def __init__(self, type: _Optional[str] = ..., location: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("verdict", "tags", "defects", "description", "model", "vlm_ms", "gateway_ms", "attempts", "prompt_tokens", "answer_tokens", "notes")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DEFECTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VLM_MS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    defects: _containers.RepeatedCompositeFieldContainer[Defect]
    description: str
    model: str
    vlm_ms: float
    gateway_ms: float
    attempts: int
    prompt_tokens: int
    answer_tokens: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., defects: _Optional[_Iterable[_Union[Defect, _Mapping]]] = ..., description: _Optional[str] = ..., model: _Optional[str] = ..., vlm_ms: _Optional[float] = ..., gateway_ms: _Optional[float] = ..., attempts: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., answer_tokens: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...
