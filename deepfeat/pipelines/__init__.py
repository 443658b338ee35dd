"""Pipelines: small-data experiments composing featurize and classify.

``run_experiment`` audits a labelled image folder, measures learning curves (k labelled
images per class, fixed-seed repeats, nested hyperparameter choice), a layer sweep, a
backbone comparison and baselines, extrapolates the curve, and writes a self-contained
HTML report. The building blocks are public for custom protocols.
"""

from deepfeat.extras import require

require("deepfeat.pipelines")  # one line naming the extra to install, not a traceback

from deepfeat.pipelines.audit import NEAR_DUPLICATE_THRESHOLD, DataAudit, audit_dataset
from deepfeat.pipelines.demo import run_demo
from deepfeat.pipelines.demo_data import export_demo_data, export_digits, export_lfw_subset
from deepfeat.pipelines.experiment import ExperimentResult, run_experiment, transfer_verdict
from deepfeat.pipelines.experiment_config import ExperimentConfig
from deepfeat.pipelines.experiment_spaces import FeatureSpace, plan_spaces, suggest_layers
from deepfeat.pipelines.extrapolate import Extrapolation, PowerLaw, extrapolate, fit_power_law
from deepfeat.pipelines.heads import default_search_factory, fixed_head
from deepfeat.pipelines.pixels import pixel_features
from deepfeat.pipelines.protocol import Draw, ProtocolResult, make_draws, run_protocol
from deepfeat.pipelines.sampling import parse_shots, sample_k_shot, stratified_split
from deepfeat.pipelines.summary import paired_gain, summarize, t_interval

__all__ = [
    "NEAR_DUPLICATE_THRESHOLD",
    "DataAudit",
    "Draw",
    "ExperimentConfig",
    "ExperimentResult",
    "Extrapolation",
    "FeatureSpace",
    "PowerLaw",
    "ProtocolResult",
    "audit_dataset",
    "default_search_factory",
    "export_demo_data",
    "export_digits",
    "export_lfw_subset",
    "extrapolate",
    "fit_power_law",
    "fixed_head",
    "make_draws",
    "paired_gain",
    "parse_shots",
    "pixel_features",
    "plan_spaces",
    "run_demo",
    "run_experiment",
    "run_protocol",
    "sample_k_shot",
    "stratified_split",
    "suggest_layers",
    "summarize",
    "t_interval",
    "transfer_verdict",
]
