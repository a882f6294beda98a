"""The vae task's reports: the training report (ELBO terms per epoch, previews
linked), the test results (last previews embedded, test ELBO/recon/KL) and
the deployment guide (sampling audio from the exported decoder). Pure."""

from __future__ import annotations

import ast
import re

from tests.unit.test_gates import evidence as classifier_evidence
from tests.unit.test_gates import export_report, test_evaluation
from tests.unit.test_vae_gates import preview, vae_evidence, vae_export, vae_test
from trainpipe_operator.reports.finalization import render_deployment_guide, render_test_results
from trainpipe_operator.reports.training import render_training_results
from trainpipe_operator.tasks import VAE
from trainpipe_trainer.contract.job_config import AudioConfig, JobConfig, VaeConfig

JOB = JobConfig(run_dir="/runs/x", task="vae").model_dump(mode="json", by_alias=True)


def baseline_text(**kwargs) -> str:
    return render_training_results("Baseline results", vae_evidence(**kwargs), JOB, ("optimize", "short"), VAE)


def test_vae_training_report_shows_the_elbo_terms_not_accuracy():
    text = baseline_text()
    assert "accuracy" not in text.lower() and "train acc" not in text
    assert "| epoch | train loss | val loss | val recon | val KL | KL weight | active units | lr |" in text
    assert "| val_kl (nats per sample) | 4.2 | 4.2 |" in text
    assert "| active latent units | 12 | 12 |" in text
    assert "latentDim: 16" in text and "task: vae" in text  # the config shows the vae section


def test_vae_training_report_links_every_preview_relatively():
    text = baseline_text()
    assert "## Previews" in text
    for kind in ("original", "reconstruction", "prior"):
        assert f"[{kind}_0.wav](previews/epoch_005/{kind}_0.wav)" in text
        assert f"[mel](previews/epoch_005/{kind}_0.png)" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all(not link.startswith(("/", "..")) for link in links)


def test_an_unsafe_preview_path_is_shown_not_linked():
    text = baseline_text(previews=[preview(5, wav="/etc/passwd"), preview(5, "prior", wav="a b/c.wav")])
    assert "](/etc/passwd)" not in text and "/etc/passwd (not under the run directory: not linked)" in text
    assert "[c.wav](<a b/c.wav>)" in text


def test_classification_training_report_is_unchanged():
    ev = classifier_evidence()
    job = JobConfig(run_dir="/runs/x").model_dump(mode="json", by_alias=True)
    text = render_training_results("Baseline results", ev, job, ("optimize", "short"))
    assert "| epoch | train loss | val loss | train acc | val acc | lr | seconds | skipped |" in text
    assert "## Previews" not in text and "vae:" not in text and "task:" not in text


def test_vae_test_results_embed_the_last_previews_and_quote_the_elbo():
    ev = vae_evidence(n=10)
    text = render_test_results(vae_test(), "val_loss <= 50.0", VAE, ev.previews)
    assert "| negative ELBO (test loss, nats per sample) | 45.5 |" in text
    assert "| reconstruction | 41.25 |" in text and "| KL (nats per sample) | 4.25 |" in text
    assert "epoch 10" in text
    for kind in ("original", "reconstruction", "prior"):
        assert f"![mel spectrogram, {kind} 0](previews/epoch_010/{kind}_0.png)" in text
        assert f"[{kind}_0.wav](previews/epoch_010/{kind}_0.wav)" in text
    assert "epoch_005" not in text  # only the last previews
    assert "confusion" not in text.lower()


def test_vae_test_results_without_previews_say_so():
    assert "wrote no preview" in render_test_results(vae_test(), "val_loss <= 50.0", VAE)


def test_classification_test_results_and_guide_are_unchanged():
    text = render_test_results(test_evaluation(), "val_acc >= 0.9")
    assert "## Confusion matrix" in text and "Previews" not in text
    guide = render_deployment_guide(export_report(), "smallcnn", test_evaluation(), vae=VaeConfig(),
                                    audio=AudioConfig())
    assert "softmax" in guide and "log_mel_to_audio" not in guide


def test_vae_deployment_guide_samples_audio_from_the_decoder():
    vae = VaeConfig(latent_dim=24, griffin_lim_iters=48)
    audio = AudioConfig(sample_rate=22050, n_mels=80)
    guide = render_deployment_guide(vae_export(), "vae-small", vae_test(), vae=vae, audio=audio)
    for section in ("## Inputs", "## Preprocessing", "## Outputs", "## Sampling audio", "## Loading", "## Parity"):
        assert section in guide, section
    assert "z ~ N(0, I)" in guide and "latent dimension 24" in guide
    assert "test negative ELBO 45.5" in guide
    code = guide.split("## Sampling audio", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    ast.parse(code)
    assert "from trainpipe_trainer.tasks.vae.mel import log_mel_to_audio" in code
    assert "log_mel_to_audio(log_mel, audio_config, 48)" in code
    assert 'ort.InferenceSession("decoder.onnx"' in code and '{"z": z}' in code
    assert "standard_normal((4, 24))" in code and "sf.write(" in code
    assert "sample_rate=22050" in code and "n_mels=80" in code
    assert "Griffin-Lim" in guide  # the inversion, described in words
