"""Periodic schedules for the workers of tests/test_periodic.py only: each module is imported
by a worker started with ``AIOTASKQ_TEST_IMPORTS`` naming it, so that no other test's worker
enqueues their ticks."""
