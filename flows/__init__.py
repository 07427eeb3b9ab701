"""Flows are values: the pipeline declaration, Flow/Group/Cookie values, encoding, decoding,
dump-flows formatting and an in-memory switch to walk packets through. Pure: no I/O, no clocks."""

from flows.actions import (
    CT, IN_PORT, NAT, Conjunction, Controller, CtClear, DecTtl, Goto, GroupAction, Meter, Move, Output,
    PopVlan, PushVlan, Resubmit, SetField, WriteMetadata, load,
)
from flows.cookie import Cookie, CookieRegistry
from flows.flow import Bucket, Flow, FlowError, Group
from flows.pipeline import DEFAULT, HIGH, LOW, MATCH, OVERRIDE

__all__ = [
    "CT", "DEFAULT", "HIGH", "IN_PORT", "LOW", "MATCH", "NAT", "OVERRIDE", "Bucket", "Conjunction",
    "Controller", "Cookie", "CookieRegistry", "CtClear", "DecTtl", "Flow", "FlowError", "Goto", "Group",
    "GroupAction", "Meter", "Move", "Output", "PopVlan", "PushVlan", "Resubmit", "SetField",
    "WriteMetadata", "load",
]
