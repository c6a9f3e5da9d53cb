"""Scheduler: graph -> ordered Kernel IR with a buffer plan. See schedule.py."""

from scheduler.schedule import Schedule, schedule

__all__ = ["Schedule", "schedule"]
