"""The production-ready gate's checks that differ for the ``vae`` task
(docs/gates.md, "The VAE task": the test split's ELBO, reconstruction and
KL, once; the decoder exported to ONNX with onnxruntime parity).

``finalization.evaluate_finalization`` uses these in place of the
classifier's test-evaluated, exported, export-parity and deployment-guide
when the pipeline's task is ``vae``; the ids stay the same.
"""

from __future__ import annotations

from dataclasses import replace

from trainpipe_operator.gates.checks import (
    Check,
    failed,
    first_few,
    is_finite,
    passed,
    quotes_figure,
)
from trainpipe_operator.gates.inputs import RunFiles
from trainpipe_operator.gates.test_figures import test_metric
from trainpipe_trainer.contract.results import (
    EXPORT_FILE,
    PARITY_ATOL,
    PARITY_RTOL,
    TEST_EVALUATION_FILE,
    ExportReport,
    TestEvaluation,
)

TEST_METRICS = ("test_loss", "test_recon", "test_kl")
DECODER = "decoder"
SAMPLING_CALL = "log_mel_to_audio"


def check_vae_test_evaluated(test: TestEvaluation | None, files: RunFiles) -> Check:
    ev = files.at(TEST_EVALUATION_FILE)
    threshold = "test_loss (negative ELBO), test_recon and test_kl, finite, on the held-out test split"
    if test is None:
        return failed("test-evaluated", None, threshold, ev, "The test split was not evaluated.")
    problems = []
    if test.task != "vae":
        problems.append(f"the evaluation is for the task {test.task!r}, not vae")
    if test.samples <= 0:
        problems.append("no test sample")
    missing = [name for name in TEST_METRICS if test_metric(test, name) is None]
    if missing:
        shown = ", ".join(f"{name}={test.metrics.get(name)}" for name in missing)
        problems.append(f"missing or not finite: {shown}")
    loss = test_metric(test, "test_loss")
    if problems:
        return failed("test-evaluated", round(loss, 6) if loss is not None else None, threshold, ev,
                      "The test evaluation is incomplete: " + "; ".join(problems) + ".")
    assert loss is not None
    recon, kl = test_metric(test, "test_recon"), test_metric(test, "test_kl")
    return passed("test-evaluated", round(loss, 6), threshold, ev,
                  f"On {test.samples} held-out test chunks: negative ELBO {loss:.4f} = reconstruction "
                  f"{recon:.4f} + KL {kl:.4f} nats per sample.")


def check_vae_exported(export: ExportReport | None, base: Check, files: RunFiles) -> Check:
    """The generic ``exported`` check (``base``), and the decoder among the
    parts: sampling new audio needs nothing else."""
    if base.result == "fail" or export is None:
        return base
    decoder = export.parts.get(DECODER)
    if not decoder:
        parts = ", ".join(f"{k}: {v}" for k, v in export.parts.items()) or "none"
        return failed("exported", base.value, f"{base.threshold}; the decoder among export.parts",
                      files.at(EXPORT_FILE), f"No decoder was exported (export.parts: {parts}): new audio cannot "
                      "be sampled without it. Keep 'decoder' in vae.exportParts.")
    return passed("exported", base.value, f"{base.threshold}; the decoder among export.parts",
                  files.at(EXPORT_FILE), f"{base.message} Decoder: {decoder}.")


def check_vae_export_parity(export: ExportReport | None, formats: list[str], files: RunFiles) -> Check:
    """allclose in fp32 per runtime; no top-1 class (a decoder outputs a
    spectrogram, not class scores)."""
    ev = files.at(EXPORT_FILE)
    threshold = f"rtol {PARITY_RTOL:g}, atol {PARITY_ATOL:g} on the decoder's output"
    if export is None:
        return failed("export-parity", None, threshold, ev, "No export report: parity was not checked.")
    runtimes = {"onnx": ("onnxruntime",), "torchscript": ("torchscript", "torch.export")}
    problems, diffs = [], []
    for fmt in formats:
        wanted = runtimes.get(fmt, (fmt,))
        if not any(p.runtime in wanted for p in export.parity):
            problems.append(f"{fmt}: no parity check ({' or '.join(wanted)})")
    for p in export.parity:
        if p.max_abs_diff is not None and is_finite(p.max_abs_diff):
            diffs.append(p.max_abs_diff)
        if p.error:
            problems.append(f"{p.runtime}: {p.error}")
        elif not p.allclose:
            problems.append(f"{p.runtime}: outputs differ from PyTorch (max abs diff {p.max_abs_diff})")
    value = float(f"{max(diffs):.3g}") if diffs else None
    if problems:
        return failed("export-parity", value, threshold, ev, "Export parity fails: " + "; ".join(problems) + ".")
    shown = ", ".join(f"{p.runtime} ({p.samples} inputs)" for p in export.parity)
    return passed("export-parity", value, threshold, ev,
                  f"The exported decoder matches PyTorch in fp32: {shown}; max abs diff {value}.")


def check_vae_deployment_guide(base: Check, guide_text: str | None, test: TestEvaluation | None,
                               export: ExportReport | None, files: RunFiles) -> Check:
    """The generic ``deployment-guide`` check (``base``: sections, files), and
    what sampling needs: the decoder file, the log-mel inversion, the test
    split's negative ELBO."""
    if base.result == "fail" or not guide_text:
        return base
    problems = []
    decoder = export.parts.get(DECODER) if export is not None else None
    if decoder and decoder not in guide_text:
        problems.append(f"the decoder file {decoder}")
    if SAMPLING_CALL not in guide_text:
        problems.append(f"how to turn the decoder's log-mel into audio ({SAMPLING_CALL})")
    loss = test_metric(test, "test_loss")
    if loss is not None and not quotes_figure(guide_text, loss):
        problems.append(f"the test negative ELBO {loss:.4f}")
    threshold = f"{base.threshold}; the decoder, the log-mel inversion, the test ELBO"
    if problems:
        return failed("deployment-guide", base.value, threshold, files.at("deployment_guide.md"),
                      f"deployment_guide.md does not name {first_few(problems)}.")
    return replace(base, threshold=threshold,
                   message=base.message.rstrip(".") + "; it says how to sample audio from the decoder.")
