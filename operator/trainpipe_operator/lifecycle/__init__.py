"""A pipeline's life beside its phases: holds (``spec.suspend``, queue
admission) and cleanup after it finished (``spec.ttlSecondsAfterFinished``)."""
