"""Stream processors (faust-streaming): validate, keep per-device state, score, emit.

Processors are thin Faust loops around pure functions from ``models`` and ``alerts``.
"""
