"""Process exit codes of ``python -m trainpipe_trainer.run``: the control plane
reads them to tell "resubmit and resume" from "give up"."""

OK = 0
FAILED = 1
CONFIG_ERROR = 2
# EX_TEMPFAIL from sysexits.h: interrupted at a step boundary, checkpoint
# written, starting again in the same run directory resumes.
INTERRUPTED_RESUMABLE = 75
