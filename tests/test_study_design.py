"""The study design of issue 23: replicates averaged within a seed, the mixed model per test
subject with its minimum detectable difference, the exact paired-t seed count, interpolated
savings, and the study's sweep grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from axal.report import summarize, write_report
from axal.report.statistics import (
    budget_steps,
    design_mde,
    labels_to_reach_interpolated,
    mixed_model_difference,
    reml_random_intercept,
    seeds_for_difference,
)
from axal.sweep import compose_sweep, expand, in_project, report_with
from tests.test_report import make_run, random_dice


def _simulate(effect, sd_between, sd_within, n_subjects, per_subject, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, sd_between, n_subjects)
    d, g = [], []
    for i in range(n_subjects):
        for _ in range(per_subject):
            d.append(effect + u[i] + rng.normal(0.0, sd_within))
            g.append(f"sub-{i}")
    return np.array(d), g


# ------------------------------------------------------------------------------------------
# Mixed model and minimum detectable difference
# ------------------------------------------------------------------------------------------
def test_mixed_model_recovers_a_known_effect_and_variance_components():
    effect, sb, sw = 0.02, 0.015, 0.01
    d, g = _simulate(effect, sb, sw, n_subjects=400, per_subject=4, seed=0)
    fit = mixed_model_difference(d, g)
    assert fit["n_subjects"] == 400 and fit["n_obs"] == 1600
    assert fit["ci_low"] < effect < fit["ci_high"]
    assert fit["estimate"] == pytest.approx(effect, abs=3 * fit["se"])
    assert fit["var_between"] == pytest.approx(sb**2, rel=0.2)
    assert fit["var_within"] == pytest.approx(sw**2, rel=0.1)
    assert fit["shown"] is True


def test_mixed_model_ci_covers_the_effect_at_its_level():
    """Over many small studies (10 subjects, 2 seeds each) the 95% CI holds the true effect
    about 95% of the time, and says 'not shown' when it holds 0."""
    effect, covered, n = 0.01, 0, 300
    for rep in range(n):
        d, g = _simulate(effect, 0.01, 0.01, n_subjects=10, per_subject=2, seed=100 + rep)
        fit = mixed_model_difference(d, g)
        covered += fit["ci_low"] <= effect <= fit["ci_high"]
        assert fit["shown"] == (not fit["ci_low"] <= 0 <= fit["ci_high"])
    assert 0.90 <= covered / n <= 0.99


def test_reml_matches_the_balanced_anova_estimates():
    """Balanced data, interior optimum: REML equals the ANOVA (method of moments) estimates,
    σ²w = MSW and σ²b = (MSB − MSW) / m, and the mean's SE is √(MSB / (k m))."""
    d, g = _simulate(0.0, 2.0, 1.0, n_subjects=12, per_subject=3, seed=4)
    k, m = 12, 3
    y = d.reshape(k, m)
    msw = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum() / (k * (m - 1))
    msb = m * ((y.mean(axis=1) - y.mean()) ** 2).sum() / (k - 1)
    assert msb > msw  # interior
    fit = reml_random_intercept(d, g)
    assert fit["var_within"] == pytest.approx(msw, rel=1e-5)
    assert fit["var_between"] == pytest.approx((msb - msw) / m, rel=1e-5)
    assert fit["mean"] == pytest.approx(y.mean())
    assert fit["se"] == pytest.approx(math.sqrt(msb / (k * m)), rel=1e-5)


def test_reml_agrees_with_statsmodels_on_unbalanced_data():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(7)
    u = rng.normal(0, 1.5, 9)
    d = [1 + u[i] + rng.normal() for i in range(9) for _ in range(2 + i % 3)]
    g = [f"s{i}" for i in range(9) for _ in range(2 + i % 3)]
    mine = reml_random_intercept(d, g)
    theirs = sm.MixedLM(np.array(d), np.ones((len(d), 1)), groups=np.array(g)).fit(reml=True)
    assert mine["mean"] == pytest.approx(float(theirs.fe_params[0]), abs=1e-4)
    assert mine["se"] == pytest.approx(float(theirs.bse[0]), rel=1e-3)
    assert mine["var_within"] == pytest.approx(float(theirs.scale), rel=1e-3)
    between = float(np.asarray(theirs.cov_re).ravel()[0])
    assert mine["var_between"] == pytest.approx(between, rel=1e-3)


def test_mde_shrinks_with_more_subjects_and_seeds_only_shrink_the_within_part():
    vb, vw = 2.4, 4.0
    by_subjects = [design_mde(vb, vw, k, 2) for k in (5, 10, 20, 40)]
    assert all(a > b for a, b in itertools_pairs(by_subjects))
    # more seeds per subject: smaller, but never below the between-subject floor
    by_seeds = [design_mde(vb, vw, 5, m) for m in (1, 2, 4, 100, 10_000)]
    assert all(a > b for a, b in itertools_pairs(by_seeds))
    floor = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * math.sqrt(vb / 5)
    assert by_seeds[-1] > floor and by_seeds[-1] == pytest.approx(floor, rel=1e-3)
    # the fitted model's MDE shrinks with the subjects it sees
    fits = [
        mixed_model_difference(*_simulate(0.0, 0.01, 0.01, k, 2, seed=1))["mde"] for k in (8, 80)
    ]
    assert fits[1] < fits[0] / 2


def itertools_pairs(values):
    return zip(values, values[1:])


def test_mixed_model_declines_with_too_few_subjects():
    fit = mixed_model_difference([0.1, 0.2], ["a", "a"])
    assert math.isnan(fit["estimate"]) and "1 subject" in fit["note"]


# ------------------------------------------------------------------------------------------
# Seeds for a 1-point gain, interpolated budgets
# ------------------------------------------------------------------------------------------
def test_seeds_for_difference_is_the_exact_noncentral_t_count():
    # the textbook paired-t sample sizes for effect sizes 1 and 0.5 (alpha 0.05, power 0.8)
    assert seeds_for_difference(1.0, 1.0) == 10
    assert seeds_for_difference(2.0, 1.0) == 34
    n = seeds_for_difference(0.023, 0.01)

    def power(k):
        crit = stats.t.ppf(0.975, k - 1)
        nc = 0.01 * math.sqrt(k) / 0.023
        return stats.nct.sf(crit, k - 1, nc) + stats.nct.cdf(-crit, k - 1, nc)

    assert power(n) >= 0.8 > power(n - 1)
    normal = math.ceil(((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 0.023 / 0.01) ** 2)
    assert n > normal  # the normal approximation undercounts
    assert seeds_for_difference(0.0, 0.01) is None and seeds_for_difference(1.0, 0.0) is None


def test_labels_to_reach_interpolated_between_the_straddling_rounds():
    n, y = [2, 4, 8, 16], [0.5, 0.6, 0.8, 0.9]
    assert labels_to_reach_interpolated(n, y, 0.7) == pytest.approx(6.0)
    assert labels_to_reach_interpolated(n, y, 0.4) == 2.0
    assert math.isnan(labels_to_reach_interpolated(n, y, 0.95))
    assert budget_steps([(np.array(n, float), np.array(y))]) == (2.0, 2.0)


# ------------------------------------------------------------------------------------------
# Replicates in the report
# ------------------------------------------------------------------------------------------
def _loso(run: dict, shift: float = 0.0) -> dict:
    """Leave one subject out: seed s tests subject s mod 4, whose Dice is the run's + shift."""
    subject = f"sub-{run['seed'] % 4}"
    for r in run["rounds"]:
        r["test"]["dice"] += shift
        r["test"]["per_subject"] = {subject: {"dice": r["test"]["dice"]}}
    return run


def test_replicates_of_random_are_averaged_within_a_seed_before_pairing(tmp_path):
    runs = []
    for seed in range(8):
        runs.append(_loso(make_run("tem", "random", seed, random_dice, 12)))
        second = _loso(make_run("tem", "random", seed, random_dice, 12), shift=0.02)
        second["replicate"] = 1  # another draw: 2 points better throughout
        runs.append(second)
        bald = _loso(make_run("tem", "bald", seed, random_dice, 12), shift=0.01 + 0.001 * seed)
        runs.append(bald)
    summary = write_report(runs, tmp_path)
    tem = summary["datasets"]["tem"]
    rnd, bald = tem["strategies"]["random"], tem["strategies"]["bald"]
    assert rnd["n_seeds"] == 8 and rnd["n_draws"] == 16 and "n_draws" not in bald
    assert len(rnd["paths"]) == 16
    # random's seed value is the mean of its two draws: +1 point over the first draw
    alone = summarize([r for r in runs if not r.get("replicate")])["datasets"]["tem"]
    for s in map(str, range(8)):
        assert rnd["alc"]["per_seed"][s] == pytest.approx(
            alone["strategies"]["random"]["alc"]["per_seed"][s] + 0.01
        )
    # paired by seed: bald − mean(random draws) = 0.001 * seed
    stats_ = bald["stats"]
    assert stats_["n_paired"] == 8
    assert stats_["alc_diff_mean"] == pytest.approx(np.mean([0.001 * s for s in range(8)]))
    mixed = stats_["mixed"]
    assert mixed["n_subjects"] == 4 and mixed["n_obs"] == 8
    assert mixed["estimate"] == pytest.approx(0.0035, abs=1e-6)
    # per-subject table: one value per seed (draws averaged), not one per draw
    per = tem["per_subject"]["dice"]
    assert per["sub-0"]["random"]["n"] == 2
    md = (tmp_path / "table.md").read_text()
    assert "Per test subject, mixed model vs random:" in md
    assert "seeds for 1 point" in md and "saving @95%, interpolated" in md
    assert "MDE (design)" in (tmp_path / "report.html").read_text()


def test_a_semi_supervised_run_is_its_own_arm_and_full_replicates_are_averaged():
    runs = []
    for seed in range(3):
        runs.append(make_run("tem", "random", seed, random_dice, 12))
        semi = make_run("tem", "random", seed, random_dice, 12)
        semi["config"] = {"trainer": {"semi": "mean_teacher"}}
        runs.append(semi)
        for rep, dice in ((0, 0.80), (1, 0.84)):
            full = make_run("tem", "full", seed, lambda n, s, d=dice: d, 15)
            full["replicate"] = rep
            runs.append(full)
    tem = summarize(runs)["datasets"]["tem"]
    assert sorted(tem["strategies"]) == ["random", "random+mean_teacher"]
    ref = tem["full_data"]["reference"]
    assert ref["n_seeds"] == 3 and ref["n_draws"] == 6
    assert ref["mean"] == pytest.approx(0.82)


# ------------------------------------------------------------------------------------------
# The study's grid
# ------------------------------------------------------------------------------------------
def _arms(jobs):
    out: dict[str, set] = {}
    for job in jobs:
        arm = job.run_dir.parent.name
        out.setdefault(arm, set()).add(job.run_dir.name)
    return out


def test_the_study_grid_has_its_arms_on_every_seed():
    cfg = compose_sweep(["experiment=tem_tile_axonmyelin"])
    assert cfg.task == "axonmyelin" and cfg.dataset.test_subjects == 1
    assert list(cfg.al.per_round) == [2, 2, 4, 4, 8, 8, 16, 16] and cfg.al.rounds == 9
    jobs = expand(cfg, [])
    arms = _arms(jobs)
    seeds = {f"seed{s}" for s in range(20)}
    assert arms == {
        "strategy=random": seeds,
        "strategy=random,replicate=1": seeds,
        "strategy=random,semi=mean_teacher": seeds,
        "strategy=bald_power": seeds,
        "strategy=bald_power,semi=mean_teacher": seeds,
    }
    # the supervised arms alone, for as long as trainer/semi does not exist: same folders,
    # and no job mentions trainer.semi
    supervised = expand(compose_sweep(["experiment=tem_tile_axonmyelin", "sweep.semi=[null]"]), [])
    assert len(supervised) == 60
    assert {j.run_dir for j in supervised} < {j.run_dir for j in jobs}
    assert not any("semi" in o for j in supervised for o in j.overrides)
    # the reference: as many steps as a tile run, twice per seed, beside the arms
    full = compose_sweep(["experiment=tem_full_axonmyelin"])
    assert (
        full.trainer.steps == cfg.trainer.steps + (cfg.al.rounds - 1) * cfg.trainer.finetune_steps
    )
    assert full.sweep.dir == cfg.sweep.dir and full.dataset.test_subjects == 1
    assert _arms(expand(full, [])) == {"strategy=full": seeds, "strategy=full,replicate=1": seeds}
    long = compose_sweep(["experiment=tem_full_axonmyelin_long"])
    assert {j.run_dir.parent.name for j in expand(long, [])} == {
        "strategy=full,steps=3000",
        "strategy=full,steps=10000",
    }


@pytest.mark.parametrize(
    "experiment, arm",
    [
        ("tem_tile_axonmyelin_late_teacher", "strategy=random,semi=mean_teacher,from_round=1"),
        ("tem_tile_axonmyelin_typiclust", "strategy=typiclust_then_bald_power"),
    ],
)
def test_a_follow_on_arm_keeps_the_study_design_and_its_round_0s(experiment, arm):
    """A follow-on arm is compared with the study's arms, so it must test the same mice on the
    same seeds with the same budget grid, train round 0 where the study's round 0s are, and
    report beside the study's folder, from its own folder."""
    study = compose_sweep(["experiment=tem_tile_axonmyelin"])
    cfg = compose_sweep([f"experiment={experiment}"])
    for key in ("task", "dataset.test_subjects", "al.per_round", "al.rounds", "trainer.steps"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(study, key), key
    jobs = expand(cfg, [])
    assert _arms(jobs)[arm] == {f"seed{s}" for s in range(20)}
    study_dir = in_project(study.sweep.dir)
    assert in_project(cfg.sweep.dir) != study_dir
    assert not {j.run_dir for j in jobs} & {j.run_dir for j in expand(study, [])}
    caches = {o for j in jobs for o in j.overrides if o.startswith("al.first_round_cache=")}
    assert caches == {f"al.first_round_cache='{study_dir / 'first_rounds'}'"}
    assert report_with(cfg) == [study_dir]


def test_the_sem_study_has_the_tem_studys_design_on_two_seeds_per_rat():
    """The SEM study is compared with the TEM one: the same arms, budget grid and reference
    length, leave one rat out, and 2K seeds for K = 8 rats."""
    tem = compose_sweep(["experiment=tem_tile_axonmyelin"])
    sem = compose_sweep(["experiment=sem_tile_axonmyelin"])
    assert sem.dataset.name == "sem" and sem.task == "axonmyelin"
    for key in ("dataset.test_subjects", "al.per_round", "al.rounds", "trainer.steps"):
        assert OmegaConf.select(sem, key) == OmegaConf.select(tem, key), key
    seeds = {f"seed{s}" for s in range(16)}
    arms = _arms(expand(sem, []))
    assert set(arms) == set(_arms(expand(tem, [])))
    assert all(runs == seeds for runs in arms.values())
    full = compose_sweep(["experiment=sem_full_axonmyelin"])
    assert full.trainer.steps == 5400 and full.sweep.dir == sem.sweep.dir
    assert _arms(expand(full, [])) == {"strategy=full": seeds, "strategy=full,replicate=1": seeds}
