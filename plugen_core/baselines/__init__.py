"""Baselines PluGeN is measured against, each behind the interface of base.Baseline (fit, sample_latents, manipulate)."""
from plugen_core.baselines.base import Baseline, GaussianPrior, standard_normal
from plugen_core.baselines.conditional_flow import ConditionalFlow
from plugen_core.baselines.interfacegan import InterFaceGAN
from plugen_core.baselines.lace import LACE
from plugen_core.baselines.rejection import RejectionSampling

METHODS: dict[str, type[Baseline]] = {
    "interfacegan": InterFaceGAN,
    "conditional_flow": ConditionalFlow,
    "lace": LACE,
    "rejection": RejectionSampling,
}


def create(method: str, **settings) -> Baseline:
    """A baseline by its name in METHODS, with its settings (plain values, e.g. from a stage's params)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline '{method}'; choose from {list(METHODS)}")
    return METHODS[method](**settings)


__all__ = ["LACE", "METHODS", "Baseline", "GaussianPrior", "ConditionalFlow", "InterFaceGAN", "RejectionSampling", "create", "standard_normal"]
