"""Moments given on the command line (`--since`)."""

import argparse
from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime


def moment_parse(value: str) -> datetime:
    """An ISO date or date-time, aware; a naive one is in TIME_ZONE (Asia/Jakarta).

    Raises ValueError with a message for the operator."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(f"{value!r} is not an ISO date or date-time (e.g. 2026-11-22T08:00+07:00)")
        moment = datetime(day.year, day.month, day.day)
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def moment_argument(value: str) -> datetime:
    """moment_parse as an argparse `type=`: a bad value is the command's usage error."""
    try:
        return moment_parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
