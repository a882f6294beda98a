"""The trainer's record of which GPUs each rank ran on (evidence.json
``gpus``), and the preflight's refusal of a GPU job on the CPU.

There is no GPU here: the CUDA path is tested through the ``cuda`` seam of
``rank_gpus`` (a stand-in with torch.cuda's ``get_device_properties``), the
CPU path for real."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainpipe_trainer.contract.evidence import Evidence, RankGpus
from trainpipe_trainer.engine.gpu_identity import describe, gather_rank_gpus, rank_gpus, uuid_text
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.preflight import gpu_problem, run_preflight

from .test_engine import linear_parts

TORCH_UUID = "6f2ba7ff-5c3a-4d1e-9b7a-0c1d2e3f4a5b"  # torch's form: no "GPU-" prefix


class FakeCuda:
    """torch.cuda as far as rank_gpus reads it, for two devices."""

    def __init__(self, uuids: list[object], fail: bool = False) -> None:
        self.uuids, self.fail = uuids, fail

    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return 0

    def get_device_properties(self, index: int) -> SimpleNamespace:
        if self.fail:
            raise RuntimeError("CUDA driver version is insufficient")
        return SimpleNamespace(name="NVIDIA H100 80GB HBM3", uuid=self.uuids[index])


class NoCuda:
    def is_available(self) -> bool:
        return False


def test_a_cuda_rank_records_its_device_uuid_in_nvml_form() -> None:
    other = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    record = rank_gpus(3, torch.device("cuda", 1), cuda=FakeCuda([TORCH_UUID, other]), host="node-a")
    assert record == RankGpus(rank=3, host="node-a", device="cuda:1", gpu_uuids=[f"GPU-{other}"],
                              gpu_names=["NVIDIA H100 80GB HBM3"])


def test_uuid_text_keeps_nvml_and_mig_forms() -> None:
    assert uuid_text(b"GPU-" + TORCH_UUID.encode()) == f"GPU-{TORCH_UUID}"
    assert uuid_text(f"MIG-{TORCH_UUID}") == f"MIG-{TORCH_UUID}"
    assert uuid_text(TORCH_UUID) == f"GPU-{TORCH_UUID}"
    assert uuid_text("  ") == ""


def test_a_device_whose_uuid_cannot_be_read_says_why_and_records_none() -> None:
    # torch fails; NVML fails too on a machine without a driver (this one).
    record = rank_gpus(0, torch.device("cuda", 0), cuda=FakeCuda([], fail=True), host="node-b")
    assert record.gpu_uuids == []
    assert record.reason is not None and "CUDA driver version is insufficient" in record.reason
    assert "NVML" in record.reason


def test_the_cpu_path_records_no_uuid_and_the_reason() -> None:
    record = rank_gpus(0, torch.device("cpu"), cuda=NoCuda(), host="laptop")
    assert record == RankGpus(rank=0, host="laptop", device="cpu",
                              reason="trained on the CPU (CUDA is not available)")
    assert "rank 0 on laptop: cpu trained on the CPU" in describe([record])


def test_one_process_gathers_its_own_record() -> None:
    (record,) = gather_rank_gpus(0, 1, torch.device("cpu"))
    assert record.rank == 0 and record.device == "cpu" and record.gpu_uuids == []
    assert record.host


def test_the_evidence_of_a_cpu_job_holds_the_ranks_record_and_window(make_job) -> None:
    config = make_job("cpu", data={"batchSize": 8}, train={"epochs": 1})
    evidence = run_job(config, parts=linear_parts(n=16), stop=StopSignal())
    written = Evidence.read(Path(config.run_dir) / "evidence.json")
    assert written.gpus == evidence.gpus
    (record,) = written.gpus
    assert (record.rank, record.device, record.gpu_uuids) == (0, "cpu", [])
    assert record.reason and "CPU" in record.reason
    assert written.timings.started_at and written.timings.finished_at
    assert "Devices: rank 0 on" in (Path(config.run_dir) / "logs" / "training.log").read_text()


def test_gpu_problem_only_for_a_gpu_job_without_cuda(make_job) -> None:
    assert gpu_problem(make_job("c"), cuda_available=False) is None
    gpu_job = make_job("g", resources={"gpusPerWorker": 2})
    assert gpu_problem(gpu_job, cuda_available=True) is None
    message = gpu_problem(gpu_job, cuda_available=False)
    assert message is not None and "gpusPerWorker is 2" in message and "CUDA is not available" in message


def test_a_preflight_that_asked_for_a_gpu_and_got_the_cpu_fails(make_job) -> None:
    assert not torch.cuda.is_available()  # this machine: the CPU path for real
    report = run_preflight(make_job("pf-gpu", action="preflight", resources={"gpusPerWorker": 1}))
    assert not report.ok
    assert report.device == "cpu"
    assert report.error is not None and "CUDA is not available" in report.error
    assert report.loss_finite  # the rest of the preflight still ran and is reported


@pytest.mark.slow
def test_two_ddp_ranks_each_record_their_device_gathered_by_rank_0(make_job) -> None:
    """The gather is a real collective (gloo): rank 0's evidence holds both."""
    from trainpipe_trainer.launch import launch

    config = make_job("ddp-gpus", resources={"workers": 2}, train={"epochs": 1})
    evidence = launch(config)
    assert isinstance(evidence, Evidence) and evidence.status == "completed", evidence
    assert [(g.rank, g.device, g.gpu_uuids) for g in evidence.gpus] == [(0, "cpu", []), (1, "cpu", [])]
    assert all(g.host and g.reason for g in evidence.gpus)
