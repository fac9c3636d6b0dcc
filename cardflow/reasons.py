"""Why an event cannot be used: stable reason codes (``cardflow.errors.Rejected`` carries one)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an event was rejected; stable codes for dashboards and alerts."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_UID = "missing_uid"
    MISSING_EVENT = "missing_event"
    MISSING_TS = "missing_ts"
    BAD_FIELD = "bad_field"
    BAD_UID = "bad_uid"
    BAD_NUMBER = "bad_number"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    BAD_AVRO = "bad_avro"
    PROFILE_SCRIPT_ERROR = "profile_script_error"
    PROFILE_SCRIPT_TIMEOUT = "profile_script_timeout"
    PROFILE_TOO_LARGE = "profile_too_large"
    DERIVED_TOO_DEEP = "derived_too_deep"
    INTERNAL_ERROR = "internal_error"

