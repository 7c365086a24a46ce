"""The convergence study's rule: the smallest step count within 0.5 Dice points of the largest."""

from __future__ import annotations

import pytest

from axal.convergence import finetune_table, step_table


def _full(dataset, steps, seed, dice, lr=0.003):
    return {
        "dataset": dataset,
        "strategy": "full",
        "seed": seed,
        "config": {
            "model": {"module": {"lr": lr}},
            "dataset": {"batch_size": 8, "patch_size": 128},
        },
        "rounds": [
            {
                "steps": steps,
                "restarts": 0,
                "train_seconds": steps / 10,
                "test": {"dice": dice, "precision": 0.8, "sensitivity": 0.9},
            }
        ],
    }


def test_rule_picks_the_smallest_step_count_within_half_a_point_of_the_largest():
    runs = [
        _full("tem", s, seed, d + 0.002 * seed)
        for s, d in ((100, 0.80), (300, 0.85), (1000, 0.897), (3000, 0.90))
        for seed in range(3)
    ]
    rows = step_table(runs)
    chosen = [r["steps"] for r in rows if r["chosen"]]
    assert chosen == [1000]  # 0.3 points below 3000; 300 is 5 points below
    by_steps = {r["steps"]: r for r in rows}
    assert by_steps[3000]["n_seeds"] == 3 and by_steps[100]["gap_to_largest"] > 0.09
    # another learning rate is its own variant, with its own choice
    slow = [_full("tem", s, 0, d, lr=0.001) for s, d in ((300, 0.80), (3000, 0.90))]
    rows = step_table(runs + slow)
    assert sorted((r["lr"], r["steps"]) for r in rows if r["chosen"]) == [
        (0.001, 3000),
        (0.003, 1000),
    ]


def test_fine_tuning_is_compared_with_retraining_seed_by_seed():
    def run(reinit, finetune, seed, dice):
        cfg = {"al": {"reinit": reinit}, "trainer": {"finetune_steps": finetune}}
        rounds = [
            {"n_labelled": r + 1, "steps": 100, "train_seconds": 1.0, "test": {"dice": d}}
            for r, d in enumerate(dice)
        ]
        return {
            "dataset": "tem",
            "strategy": "random",
            "seed": seed,
            "config": cfg,
            "rounds": rounds,
        }

    runs = [run(True, None, s, [0.8, 0.85]) for s in (0, 1)]
    runs += [run(False, 100, 0, [0.8, 0.87]), run(False, 100, 1, [0.8, 0.83])]
    rows = {(r["arm"], r["round"]): r for r in finetune_table(runs)}
    assert rows[("finetune 100", 1)]["diff_vs_retrain_mean"] == pytest.approx(0.0, abs=1e-9)
    assert rows[("finetune 100", 1)]["n_seeds"] == 2
    assert rows[("retrain", 1)]["dice_mean"] == pytest.approx(0.85)
