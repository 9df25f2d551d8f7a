"""The `mvi-tf` command: a thin click group over library calls.

Every command parses its options, makes one library call and prints the result; the same call works from
Python. Heavy libraries (TensorFlow) are imported inside the commands so that `mvi-tf --help` is instant.
"""

from __future__ import annotations

import contextlib

import click

from mvi_tf import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mvi-tf")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's C++ and Python start-up logging (silenced by default).")
def main(verbose: bool) -> None:
    """Predict microvascular invasion (MVI) of hepatocellular carcinoma from multiphase CT and
    gadoxetic-acid MRI.

    The study pipeline, one command per stage:

    \b
      synth    -> a synthetic multi-centre cohort in genuine DICOM (or bring your own cohort)
      prepare  -> DICOM series + tumour masks + clinical table -> ROI stacks -> TFRecords
      train    -> single-phase signatures, fusion and combined (CDLM) models
      evaluate -> the paper's Table 3, ROC and decision curves, subgroups
      compare  -> CT vs MRI head-to-head (DeLong, McNemar, decision curves)
      explain  -> Grad-CAM attention maps scored against known invasion sites
      survival -> Cox, Kaplan-Meier and log-rank on predicted risk groups
      export   -> SavedModel for TensorFlow Serving and TFLite models
      predict  -> MVI probability for one new patient
      demo     -> all of the above on the bundled synthetic cohort
    """
    if not verbose:
        from mvi_tf.console import quiet_tensorflow

        quiet_tensorflow()
    _setup_logging(verbose)


#: The project's own loggers; commands that report progress (`_log_progress`) show their INFO lines.
PROJECT_LOGGERS = ("mvi_tf", "data_prep", "bench")


def _setup_logging(verbose: bool) -> None:
    """One logging setup for every command: warnings and errors as ``LEVEL logger: message`` on stderr; with
    ``--verbose`` every INFO line too (TensorFlow's included)."""
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _log_progress() -> None:
    """Show the project's INFO lines (stage started, done, skipped) for a long-running command."""
    import logging

    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


# ---------------------------------------------------------------------------------------------------------
# Commands are added below, one block per pipeline stage, each a single library call.
# ---------------------------------------------------------------------------------------------------------


def _echo_not_available(result: dict) -> None:
    """List every figure of ``result`` that is not available, one line per reason (see :mod:`mvi_tf.na`)."""
    from mvi_tf import na

    lines = na.reason_lines(result)
    if lines:
        click.echo("Not available (figures the cohort cannot define):")
        for line in lines:
            click.echo(f"  - {line}")


# --- demo / study / report: the main job end to end ------------------------------------------------------

@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="study", show_default=True,
              help="Study directory: the synthetic cohort and every stage's outputs go under it.")
@click.option("--quick", is_flag=True,
              help="A few-minute run: small cohort (scale 0.12), 96 px DICOM, 48 px ROI stacks, 3 epochs.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the cohort, data splits, initialisation and augmentation.")
@click.option("--force", is_flag=True, help="Rerun every stage, even those whose inputs have not changed.")
@click.option("--deterministic", is_flag=True,
              help="TensorFlow op determinism in training: bit-identical reruns (to compare two versions), slower.")
def demo(out_dir: str, quick: bool, seed: int, force: bool, deterministic: bool) -> None:
    """Run the whole study on the bundled synthetic multi-centre cohort.

    synth -> prepare -> train CT and MRI CDLMs -> evaluate -> compare -> explain -> survival -> export ->
    predict -> report. Resumable: a rerun skips finished stages whose inputs have not changed. The full run
    (750 synthetic patients) took 44 minutes on a 2-core machine; --quick took 7.
    """
    _log_progress()
    from mvi_tf.demo import run_demo

    result = run_demo(out_dir, quick=quick, seed=seed, force=force, deterministic=deterministic)
    click.echo(f"Study written to {result['study_dir']}; report: {result['report']}")
    for stage_name, seconds in result["timings_s"].items():
        click.echo(f"  {stage_name:<14} {seconds:>8.1f} s")


@main.command()
@click.option("--cohort", "cohort_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Cohort directory (manifest.csv, lesions.csv, clinical.csv); see README 'Cohort directory'.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Study directory to write.")
@click.option("--roi-size", type=int, default=None,
              help="ROI stack size in pixels (model input). Default: the demo's (96; 48 with --quick).")
@click.option("--epochs", type=int, default=None,
              help="Maximum epochs per training stage. Default: the demo's (20; 3 with --quick).")
@click.option("--quick", is_flag=True, help="The demo's quick preset: 48 px ROI stacks, 3 epochs (a dry run).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits, initialisation, augmentation.")
@click.option("--force", is_flag=True, help="Rerun every stage, even those whose inputs have not changed.")
def study(cohort_dir: str, out_dir: str, roi_size: int | None, epochs: int | None, quick: bool, seed: int,
          force: bool) -> None:
    """Run the whole study (prepare -> ... -> report) on your own cohort directory, with the demo's settings."""
    _log_progress()
    import dataclasses

    from mvi_tf.demo import StudySettings, run_study

    settings = StudySettings.quick(seed=seed) if quick else StudySettings(seed=seed)
    settings = dataclasses.replace(settings, roi_image_size_px=roi_size or settings.roi_image_size_px,
                                   epochs=epochs or settings.epochs)
    result = run_study(cohort_dir, out_dir, settings=settings, force=force)
    click.echo(f"Study written to {result['study_dir']}; report: {result['report']}")


@main.command()
@click.option("--study", "study_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Study directory written by `mvi-tf demo` or `mvi-tf study`.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write (default: STUDY/report.html).")
def report(study_dir: str, out_path: str | None) -> None:
    """Write one self-contained HTML report (figures embedded) that mirrors the paper."""
    from mvi_tf.report import build_report

    click.echo(f"Report written to {build_report(study_dir, out_path)}")


# --- evaluate / compare: Table 3, ROC and decision curves, subgroups, CT vs MRI head-to-head ---------------
@main.command()
@click.option("--run", "run_dirs", type=click.Path(exists=True, file_okay=False), multiple=True, required=True,
              help="Run directory written by `mvi-tf train` (repeat: one per modality, e.g. the CT and MRI runs).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for table3.csv/.md, performance.csv, subgroups, ROC/decision-curve PNGs, JSON.")
@click.option("--synthetic/--no-synthetic", default=None,
              help="Label outputs as synthetic data (default: read the runs' metrics.json/config.yaml flags).")
@click.option("--subgroup-model", default="cdlm", show_default=True,
              help="Score column stratified by age, sex, AFP and tumour size.")
@click.option("--age-cutoff", type=float, default=60.0, show_default=True,
              help="Age in years splitting the age strata (<= vs >).")
@click.option("--n-boot", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Bootstrap resamples for the CIs of CDLM vs radiological (AUC difference, net benefit).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resamples.")
def evaluate(run_dirs: tuple[str, ...], out_dir: str, synthetic: bool | None, subgroup_model: str,
             age_cutoff: float, n_boot: int, seed: int) -> None:
    """Table 3 (SEN/SPE/ACC with exact 95% CIs at the training Youden threshold, AUC with DeLong 95% CI),
    ROC and decision curves, calibration per cohort and centre, CDLM vs radiological model (AUC difference,
    NRI, IDI, net benefit with CIs) and the stratified analysis."""
    from mvi_tf import na
    from mvi_tf.evaluation import evaluate_runs

    try:
        result = evaluate_runs(list(run_dirs), out_dir, synthetic=synthetic, subgroup_model=subgroup_model,
                               age_cutoff=age_cutoff, n_boot=n_boot, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    label = f" [{result['data_label']}]" if result["data_label"] else ""
    for row in result["performance"]:
        if row["model"] != "cdlm" or row["cohort"] not in ("training", "prospective"):
            continue
        auc = na.get(row, "auc")
        shown = (f"{auc:.3f} ({na.fmt(row, 'auc_ci_low', '.3f')}-{na.fmt(row, 'auc_ci_high', '.3f')})"
                 if not isinstance(auc, na.NotAvailable) else f"not available ({auc.reason})")
        click.echo(f"{row['modality']} CDLM {row['cohort']}: AUC {shown}, SEN {na.fmt(row, 'sensitivity', '.3f')}, "
                   f"SPE {na.fmt(row, 'specificity', '.3f')}{label}")
    for row in result["calibration"]:
        if row["model"] == "cdlm" and row["cohort"] == "prospective" and row["centre"] == "all" and row.get("n"):
            click.echo(f"{row['modality']} CDLM prospective calibration: intercept {na.fmt(row, 'intercept', '.2f')}, "
                       f"slope {na.fmt(row, 'slope', '.2f')}, O/E {na.fmt(row, 'oe_ratio', '.2f')}{label}")
    missing = list(na.reasons(result))
    if missing:
        click.echo(f"{len(missing)} figures not available on this cohort; each reason is in evaluation.json "
                   f"('not_available') and the 'note' columns of performance.csv and subgroups.csv")
    click.echo(f"Evaluation written to {result['out_dir']} ({len(result['files'])} files)")


@main.command()
@click.option("--ct-run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory of the CT model.")
@click.option("--mri-run", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory of the MRI model.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for head_to_head.json/.md and the ROC and decision-curve PNGs.")
@click.option("--model", default="cdlm", show_default=True, help="Score column compared between the runs.")
@click.option("--cohort", type=click.Choice(["prospective", "training", "internal_validation"]),
              default="prospective", show_default=True, help="Patients compared (those present in both runs).")
def compare(ct_run: str, mri_run: str, out_dir: str, model: str, cohort: str) -> None:
    """CT vs MRI head-to-head on patients with both examinations: paired DeLong test of the AUCs, McNemar
    tests of sensitivity and specificity, continuous NRI and IDI of MRI over CT, decision curves and where
    each model has the higher net benefit."""
    from mvi_tf import na
    from mvi_tf.evaluation import compare_runs

    try:
        r = compare_runs(ct_run, mri_run, out_dir, model=model, cohort=cohort)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    label = f" [{r['data_label']}]" if r["data_label"] else ""
    auc, sen, spe = r["auc"], r["sensitivity"], r["specificity"]
    click.echo(f"{model} CT vs MRI on {r['n_paired']} {cohort} patients{label}: AUC {na.fmt(auc, 'ct', '.3f')} vs "
               f"{na.fmt(auc, 'mri', '.3f')} (DeLong p = {na.fmt(auc, 'delong_p_value', '.3g')}), "
               f"SEN p = {na.fmt(sen, 'mcnemar_p_value', '.3g')}, SPE p = {na.fmt(spe, 'mcnemar_p_value', '.3g')}")
    nri = r.get("reclassification_mri_over_ct") or {}
    if nri:
        click.echo(f"MRI over CT: continuous NRI {na.fmt(nri, 'nri', '.3f')} ({na.fmt(nri, 'nri_ci_low', '.3f')} to "
                   f"{na.fmt(nri, 'nri_ci_high', '.3f')}), IDI {na.fmt(nri, 'idi', '.3f')} "
                   f"({na.fmt(nri, 'idi_ci_low', '.3f')} to {na.fmt(nri, 'idi_ci_high', '.3f')})")
    _echo_not_available(r)
    click.echo(f"Head-to-head written to {r['out_dir']}")


# --- survival: Kaplan–Meier, log-rank and Cox by CDLM-predicted and histopathological MVI ---------------
@main.command("survival")
@click.option("--run", "run_dirs", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Run directory (predictions.csv, thresholds.json); repeat for CT and MRI runs.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Directory for survival.json, survival_table.csv/.md and the Kaplan-Meier PNGs.")
@click.option("--cohort", type=click.Choice(["prospective", "train", "all"]), default="prospective",
              show_default=True, help="Patients analysed: the prospective cohort (as in the paper), train, or all.")
def survival(run_dirs: tuple[str, ...], out_dir: str, cohort: str) -> None:
    """Prognostic analysis: Kaplan-Meier, log-rank and Cox regression of PFS and OS by CDLM-predicted MVI
    (training Youden threshold) next to histopathological MVI, with median follow-up (reverse Kaplan-Meier)."""
    from mvi_tf import na
    from mvi_tf.survival import survival_analysis

    try:
        result = survival_analysis(list(run_dirs), out_dir, cohorts=(cohort,))
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    label = " [SYNTHETIC DATA]" if result["synthetic"] else ""
    for analysis in result["analyses"]:
        if "error" in analysis:
            click.echo(f"{analysis['modality_name']} {analysis['endpoint'].upper()}: {analysis['error']}")
            continue
        parts = []
        for key in ("predicted", "histopathology"):
            logrank, cox = analysis[key]["logrank"], analysis[key]["cox"]
            parts.append(f"{key} log-rank p = {na.fmt(logrank, 'p_value', '.3g')}, HR {na.fmt(cox, 'hazard_ratio')}")
        click.echo(f"{analysis['modality_name']} {analysis['endpoint'].upper()} ({analysis['n']} patients, "
                   f"{analysis['events']} events): " + "; ".join(parts) + label)
    _echo_not_available({a["modality_name"] + " " + a["endpoint"].upper(): a for a in result["analyses"]})
    click.echo(f"Survival analysis written to {out_dir}")


# --- prepare: DICOM cohort -> ROI stacks -> TFRecords ------------------------------------------------------
@main.command("prepare")
@click.option("--cohort", "cohort_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Cohort directory holding manifest.csv, lesions.csv and clinical.csv.")
@click.option("--out", "out_dir", default="tfrecords", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Output directory for the TFRecords.")
@click.option("--phases", "phases", multiple=True, metavar="MODALITY=PHASE,...[;MODALITY=...]",
              help="Phase set per modality, e.g. 'ct=arterial,equilibrium'; replaces only the modalities named. "
                   "Repeatable. Defaults: ct=plain,arterial,portal; mri=t2,arterial,portal,transitional,"
                   "hepatobiliary.")
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(8, 1024),
              help="Side of the ROI stacks in pixels.")
@click.option("--margin-mm", default=10.0, show_default=True, type=click.FloatRange(0.0, 200.0),
              help="Margin around the tumour's bounding square, in mm.")
@click.option("--sampling", default="square", show_default=True, type=click.Choice(["square", "unwrapped"]),
              help="'square': the paper's ROI; 'unwrapped': the peritumoral band unwrapped along the tumour "
                   "boundary (rows = rays, columns = distance from the boundary; needs a mask per patient).")
@click.option("--strict", is_flag=True,
              help="Exit non-zero if any patient is skipped or written with a warning (several lesions, ...).")
@click.option("--workers", default=None, type=click.IntRange(1, 256),
              help="Worker processes (default: CPU count, at most 8).")
@click.option("--allow-root", "allowed_roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder outside the cohort that series_dir / mask_path may point into. Repeatable.")
def prepare(cohort_dir: str, out_dir: str, phases: tuple[str, ...], image_size: int, margin_mm: float,
            sampling: str, strict: bool, workers: int | None, allowed_roots: tuple[str, ...]) -> None:
    """DICOM series + tumour masks + clinical table -> multiphase ROI stacks -> TFRecords."""
    from data_prep.config import parse_phases
    from data_prep.prepare import CohortError, OutputLockedError, PrepareError, prepare_cohort

    try:
        phase_map = parse_phases(list(phases) or None)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--phases") from None
    try:
        result = prepare_cohort(cohort_dir, out_dir, phases=phase_map, image_size=image_size,
                                margin_mm=margin_mm, strict=strict, workers=workers, allowed_roots=allowed_roots,
                                sampling=sampling)
    except PrepareError as err:
        for _patient_id, _modality, reason in err.result.skipped:
            click.echo(f"skipped: {reason}", err=True)
        for patient_id, modality, warning in err.result.warned:
            click.echo(f"warning: patient {patient_id} ({modality}): {warning}", err=True)
        raise click.ClickException(str(err)) from None
    except (CohortError, OutputLockedError) as err:
        raise click.ClickException(str(err)) from None
    for _patient_id, _modality, reason in result.skipped:
        click.echo(f"skipped: {reason}", err=True)
    for patient_id, modality, warning in result.warned:
        click.echo(f"warning: patient {patient_id} ({modality}): {warning}", err=True)
    click.echo(f"{result.n_written} written, {result.n_skipped} skipped -> {result.out_dir} "
               f"(report: {result.report_path})")


@contextlib.contextmanager
def _records_errors(data_dir: str, modality: str):
    """Bad records given to a command (missing schema, missing / truncated / corrupt shard) -> one line."""
    import tensorflow as tf

    from mvi_tf.data import ShardError, unreadable_shard

    try:
        yield
    except (ShardError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    except tf.errors.DataLossError as err:
        found = unreadable_shard(data_dir, modality)
        where = f"TFRecord shard {found[0]} is corrupt ({found[1]})" if found else "a TFRecord shard is corrupt"
        raise click.ClickException(f"{where}; rerun `mvi-tf prepare`. Received: {err.message.splitlines()[0][:160]}") \
            from None


# --- train: signatures, fusion and CDLM of one modality ----------------------------------------------------
@main.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="TFRecords directory written by `mvi-tf prepare`.")
@click.option("--modality", required=True, type=click.Choice(["ct", "mri"]), help="Which records to train on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Run directory (rerunning into it resumes unfinished stages).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="YAML overriding the default config (sections data / model / train).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="torchvision ResNet18 state dict (.pth or .npz) for every phase branch.")
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs per stage.")
@click.option("--image-size", type=click.IntRange(32, 512),
              help="Model input side in pixels, 32..512 (resizes records).")
@click.option("--seed", type=int, help="Seed of split, initialisation, shuffling and augmentation.")
@click.option("--deterministic", is_flag=True, default=None, help="Enable TensorFlow op determinism.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              help="tf.distribute strategy (multiworker reads TF_CONFIG).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Global batch size.")
@click.option("--mixed-precision", is_flag=True, default=None, help="mixed_float16 compute (GPUs).")
@click.option("--xla", is_flag=True, default=None, help="XLA-compile the training step.")
def train_command(data_dir: str, modality: str, out_dir: str, config_path: str | None, weights: str | None,
                  epochs: int | None, image_size: int | None, seed: int | None, deterministic: bool | None,
                  strategy: str | None, batch_size: int | None, mixed_precision: bool | None,
                  xla: bool | None) -> None:
    """Train the per-phase signatures, the fusion model and the combined model (CDLM) into RUN_DIR."""
    from mvi_tf import na
    from mvi_tf.training import train

    _log_progress()
    with _records_errors(data_dir, modality):
        result = train(data_dir, modality, out_dir, config=config_path, weights=weights, epochs=epochs,
                       image_size=image_size, seed=seed, deterministic=deterministic or None, strategy=strategy,
                       batch_size=batch_size, mixed_precision=mixed_precision or None, xla=xla or None)
    if result.metrics:
        auc = result.metrics["auc"]["cdlm"]
        label = " [SYNTHETIC DATA]" if result.metrics.get("synthetic") else ""
        shown = ", ".join(f"{split} {value:.3f}" if value is not None else f"{split} n/a"
                          for split, value in auc.items() if split != na.KEY)
        click.echo(f"CDLM AUC: {shown}{label}")
        _echo_not_available({"auc": result.metrics["auc"], "youden": result.metrics.get("youden") or {}})
    click.echo(f"Run written to {result.run_dir} (final model {result.model_path})")


# --- synth: synthetic multi-centre cohort in genuine DICOM ------------------------------------------------
@main.command("synth")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False),
    help="Cohort directory to write (manifest.csv, lesions.csv, clinical.csv, dicom/, masks/, truth/). "
    "Created if missing; an older synthetic cohort there is replaced, an identical one is kept.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Master seed: the same seed gives byte-identical images, masks and tables.")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Fraction of the paper's cohort: 1 = 750 patients (CT training 156 + 150, MRI training "
              "207 + 122, prospective 115 with both CT and MRI); every centre keeps >= 2 patients per label.")
@click.option("--image-size", default=256, show_default=True, type=click.IntRange(64, 512),
              help="DICOM matrix in pixels (rows = columns), 64..512; pixel spacing = scanner FOV / size.")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Worker processes rendering patients in parallel [default: CPU count; 0 or 1: serial].")
def synth(out_dir: str, seed: int, scale: float, image_size: int, workers: int | None) -> None:
    """Write a synthetic multi-centre HCC cohort (CT and EOB-MRI) in genuine DICOM, with known truth."""
    from data_prep.synthetic import generate_cohort

    summary = generate_cohort(out_dir, seed=seed, scale=scale, image_size=image_size, workers=workers)
    status = "kept existing" if summary.reused else f"wrote {summary.n_files} DICOM files in {summary.seconds:.0f} s"
    click.echo(f"Synthetic cohort in {summary.out_dir}: {summary.n_patients} patients ({status})")
    for centre, n in summary.per_centre.items():
        click.echo(f"  {centre}: {n} patients, MVI rate {summary.mvi_rate[centre]:.2f}")
    for modality in ("ct", "mri"):
        aucs = summary.bayes_auc.get(modality, {})
        click.echo(f"  Bayes-optimal AUC {modality}: train {aucs.get('train')}, prospective {aucs.get('prospective')}")


# --- export / predict: SavedModel for TF Serving, TFLite, one new patient --------------------------------
@main.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Training run directory (cdlm.keras, schema.json, feature_selection.json, thresholds.json).")
@click.option("--out", "out_base", default="saved_models", show_default=True, type=click.Path(file_okay=False),
              help="Model base folder: writes OUT/NAME/VERSION/, OUT/models.config and OUT/NAME-*.tflite.")
@click.option("--name", default=None, help="Model name [default: mvi-cdlm-<modality>].")
@click.option("--data", "records_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="TFRecords folder (mvi-tf prepare): calibrates int8 and measures quantised AUC on validation.")
@click.option("--no-tflite", is_flag=True, help="Write the SavedModel only.")
def export_command(run_dir: str, out_base: str, name: str | None, records_dir: str | None, no_tflite: bool) -> None:
    """Export a run's CDLM as a versioned SavedModel (TF Serving) and float32/dynamic/int8 TFLite models."""
    from mvi_tf import na
    from mvi_tf.console import native_output_filtered
    from mvi_tf.export import export_run

    with native_output_filtered():
        result = export_run(run_dir, out_base=out_base, name=name, records_dir=records_dir, tflite=not no_tflite)
    click.echo(f"SavedModel {result.name} version {result.version}: {result.saved_model_dir}")
    click.echo(f"TF Serving config: {result.models_config}; model card: {result.model_card_md}")
    for path in (result.tflite_float32, result.tflite_dynamic, result.tflite_int8):
        if path is not None:
            click.echo(f"TFLite: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    for key, item in result.parity.items():
        if isinstance(item, dict) and "value" in item:
            click.echo(f"  {key}: {na.fmt(item, 'value', '')}")
    _echo_not_available(result.parity)


def _num3(value: float | None) -> str:
    return "NA" if value is None else f"{value:.3f}"


@main.command("recalibrate")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Training run directory whose predictions.csv scores the new site's labelled patients.")
@click.option("--cohort", required=True,
              help="The site's patients: value of predictions.csv's cohort (else split), or the records' cohort.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New run directory (export it with `mvi-tf export --run OUT`).")
@click.option("--slope/--intercept-only", default=False, show_default=True,
              help="Fit intercept and slope, or the intercept only (calibration-in-the-large).")
@click.option("--fit-fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True,
              help="Share of the cohort used for the fit (seeded, stratified by label); the rest is held out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fit / held-out split.")
@click.option("--data", "records_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="TFRecords folder (mvi-tf prepare) with the site's labelled patients as cohort NAME; scored "
                   "with the run's CDLM [default: the run's predictions.csv].")
def recalibrate_command(run_dir: str, cohort: str, out_dir: str, slope: bool, fit_fraction: float, seed: int,
                        records_dir: str | None) -> None:
    """Recalibrate a run's CDLM for a new site (opt-in): a new run directory whose model applies the fit."""
    from mvi_tf.export.recalibration import recalibrate_run

    result = recalibrate_run(run_dir, cohort, out_dir, fit_slope=slope, fit_fraction=fit_fraction, seed=seed,
                             records_dir=records_dir)
    record = result.record
    click.echo(f"Recalibration on {record['n_fit']} {cohort} patients: intercept {record['intercept']:.3f}, "
               f"slope {record['slope']:.3f} ({record['method']})")
    for part in ("fit", "held_out"):
        before, after = record["before"][part], record["after"][part]
        if before.get("n"):
            click.echo(f"  {part} (n={before['n']}): calibration-in-the-large {_num3(before['intercept'])} -> "
                       f"{_num3(after['intercept'])}; O/E {_num3(before['oe_ratio'])} -> {_num3(after['oe_ratio'])}")
    click.echo(f"Recalibrated run written to {result.out_dir}; export it with `mvi-tf export --run {result.out_dir}`")


def _parse_series(values: tuple[str, ...]) -> dict[str, str]:
    series: dict[str, str] = {}
    for value in values:
        phase, sep, folder = value.partition("=")
        if not sep or not phase or not folder:
            raise click.BadParameter(f"expected PHASE=DIR. Received: {value!r}", param_hint="--series")
        if phase in series:
            raise click.BadParameter(f"phase {phase!r} given twice. Received: {value!r}", param_hint="--series")
        series[phase] = folder
    return series


def _parse_roi(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise click.BadParameter(f"expected X,Y,Z,SIDE in mm. Received: {value!r}", param_hint="--roi")
    return parts  # type: ignore[return-value]


@main.command("predict")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True),
              help="SavedModel version (or base) folder, .tflite file or .keras file.")
@click.option("--backend", default="savedmodel", show_default=True,
              type=click.Choice(["savedmodel", "tflite", "keras"]),
              help="Runtime: TensorFlow SavedModel (as TF Serving), TFLite (ai_edge_litert) or the Keras model.")
@click.option("--series", multiple=True, required=True, metavar="PHASE=DIR",
              help="DICOM series folder of one phase; repeat for every phase of the model.")
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False), help="Tumour mask (SEG/NIfTI).")
@click.option("--mask-phase", default=None, help="Phase the mask was drawn on.")
@click.option("--roi", default=None, metavar="X,Y,Z,SIDE", help="Square ROI in patient coordinates (mm).")
@click.option("--clinical", required=True, help="Clinical values: JSON text, a .json file or a one-row .csv file.")
@click.option("--modality", type=click.Choice(["ct", "mri"]), default=None, help="Checked against the model.")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Training run directory (enables the Grad-CAM overlay).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write prediction.json (and gradcam.png) here.")
@click.option("--allow-shared-series", is_flag=True,
              help="Accept one series for several phases (testing on a single series; a warning is printed).")
def predict_command(model_path: str, backend: str, series: tuple[str, ...], mask_path: str | None,
                    mask_phase: str | None, roi: str | None, clinical: str, modality: str | None,
                    run_dir: str | None, out_dir: str | None, allow_shared_series: bool) -> None:
    """Predict MVI for one new patient: probability, group at the model's threshold, per-phase signatures."""
    import json

    from mvi_tf.export import PredictError, predict_patient, read_clinical

    if mask_path is not None and roi is not None:
        raise click.UsageError("Give either --mask/--mask-phase or --roi, not both.")
    from mvi_tf.console import native_output_filtered

    try:
        with native_output_filtered():
            result = predict_patient(model_path, _parse_series(series), modality=modality, mask_path=mask_path,
                                     mask_phase=mask_phase, roi=_parse_roi(roi), clinical=read_clinical(clinical),
                                     backend=backend, run_dir=run_dir, out_dir=out_dir,
                                     allow_shared_series=allow_shared_series)
    except (PredictError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(result, indent=2))


# --- explain: Grad-CAM attention maps scored against known invasion sites -----------------------------------
@main.command("explain")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Training run directory (cdlm.keras, schema.json, feature_selection.json).")
@click.option("--data", "records_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="TFRecords directory written by `mvi-tf prepare` (holds prepare_report.csv).")
@click.option("--cohort", "cohort_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Cohort directory: maps are placed on its DICOM slices and scored against truth/invasion.")
@click.option("--patients", multiple=True, metavar="ID",
              help="Patient ID to explain; repeat the option (or separate IDs by spaces). Default: all.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--method", default="gradcam", show_default=True, type=click.Choice(["gradcam", "gradcam++"]),
              help="Class activation map method (tf-keras-vis).")
@click.option("--max-patients", default=None, type=click.IntRange(min=1),
              help="Explain at most N patients (MVI-positive first).")
@click.option("--cohorts", default="prospective", show_default=True,
              type=click.Choice(["prospective", "train", "all"]), help="Which cohort's records to explain.")
@click.option("--tolerance-mm", default=5.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Peritumoral ring around the invasion sector that still counts as a pointing-game hit.")
@click.option("--randomisation", default="full", show_default=True, type=click.Choice(["full", "cascading"]),
              help="Weight randomisation of the sanity-check baseline (Adebayo et al. 2018).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the weight randomisation.")
@click.option("--engine", default="tf-keras-vis", show_default=True, type=click.Choice(["tf-keras-vis", "fused"]),
              help="One tf-keras-vis call per phase, or all phases from one forward/backward pass (same maps).")
@click.option("--stage", default=4, show_default=True, type=click.IntRange(3, 4),
              help="ResNet18 stage whose output the maps are taken at (4: last stage; 3: twice as fine).")
def explain_command(run_dir: str, records_dir: str, cohort_dir: str | None, patients: tuple[str, ...],
                    out_dir: str, method: str, max_patients: int | None, cohorts: str, tolerance_mm: float,
                    randomisation: str, seed: int, engine: str, stage: int) -> None:
    """Grad-CAM maps per phase: overlays, raw maps, feature pattern maps and localisation scores."""
    import json

    from mvi_tf import na
    from mvi_tf.explain import explain_run

    ids = [p for value in patients for p in value.split()] or None
    try:
        summary = explain_run(run_dir, records_dir, out_dir, cohort_dir=cohort_dir, patients=ids,
                              cohorts=None if cohorts == "all" else (cohorts,), max_patients=max_patients,
                              method=method, tolerance_mm=tolerance_mm, randomisation=randomisation, seed=seed,
                              engine=engine, stage=stage)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps({k: summary[k] for k in ("modality", "method", "n_patients", "n_mvi_positive")}))
    if summary.get("explained_model_note"):
        click.echo(f"  maps of the {summary['explained_model']} model: {summary['explained_model_note']}")
    localisation = summary.get("localisation") or {}
    for phase in summary["phases"]:
        row = localisation.get("per_phase", {}).get(phase)
        if row is None or not row.get("n"):
            missing = na.get(row, "hit_rate") if row else na.get(summary, "localisation")
            click.echo(f"  {phase}: localisation not available ({missing.reason})")
            continue
        centre, randomised = row["centre_baseline"], row["randomised_weights"]
        click.echo(f"  {phase}: hit rate {na.fmt(row, 'hit_rate')} (centre {na.fmt(centre, 'hit_rate')}, "
                   f"randomised {na.fmt(randomised, 'hit_rate')}, chance {na.fmt(row, 'chance')}), "
                   f"energy {na.fmt(row, 'energy_fraction')}, n={row['n']}")
    if localisation.get("phase_ranking"):
        carriers = localisation.get("localising_phases") or []
        click.echo(f"  phases that localise (p < {localisation.get('alpha', 0.05)} against both baselines and chance): "
                   f"{', '.join(carriers) if carriers else 'none'}")
    _echo_not_available(summary)
    click.echo(f"summary: {out_dir}/explain_summary.json")


if __name__ == "__main__":
    main()
