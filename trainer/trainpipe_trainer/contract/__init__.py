"""The contract between control plane and data plane: the job config the
operator (or local runner) writes before a job, and the evidence the trainer
writes after it. Pure pydantic; importing it never imports torch."""

from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import ExportReport, PreflightReport, TestEvaluation

__all__ = ["DataReport", "EpochRecord", "Evidence", "JobConfig"]
__all__ += ["ExportReport", "PreflightReport", "TestEvaluation"]
