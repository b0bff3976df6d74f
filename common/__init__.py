"""What every stage shares: atomic writes, content hashing, progress callbacks and run folders.

This package sits below the stages: ``extractor``, ``heads``, ``finetune`` and ``inference``
import it, and it imports none of them, so the dependency arrows point one way:
``common <- extractor <- heads <- finetune <- inference <- cli``.
"""
