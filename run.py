"""Run one active-learning simulation: ``python run.py dataset=tem strategy=mc_dropout``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from axal.loop import run

    run_dir = cfg.resume or HydraConfig.get().runtime.output_dir
    results = run(cfg, run_dir)
    rounds = results["rounds"]
    return rounds[-1]["test"]["dice"] if rounds else float("nan")


if __name__ == "__main__":
    main()
