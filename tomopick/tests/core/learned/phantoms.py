"""Phantoms and examples shared by the learned picking tests.

Phantoms hold four free particle classes, gold beads and a vesicle with
membrane proteins (SNR 0.5, missing wedge, CTF). The picker is trained on 10
ribosomes and 10 other things (beads, rods, trimers, membrane proteins) of one
phantom and scored on phantoms with other seeds.
"""
import numpy as np

from tomopick.core import simulate
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.picks import Picks

RIBOSOME, TRIMER, ROD, RING, MEMBRANE_PROTEIN = 4, 1, 2, 3, 5
GOLD = 0            # class id given to the beads in the scored truth
VOXEL = 10.0
SHAPE = (64, 128, 128)


def phantom(seed, shape=SHAPE, n_particles=48, snr=0.5):
    return simulate.simulate_tomogram(shape=shape, voxel_size=VOXEL, n_particles=n_particles,
                                      n_vesicles=1, n_gold=6, snr=snr, seed=seed)


def examples(ph, n=10):
    """n ribosomes and n others (3 beads, 3 rods, 2 trimers, 2 membrane proteins)."""
    p = ph.particles
    positives = p.positions[p.group_ids == RIBOSOME][:n]
    negatives = np.array([g["center"] for g in ph.gold[:3]]
                         + list(p.positions[p.group_ids == ROD][:3])
                         + list(p.positions[p.group_ids == TRIMER][:2])
                         + list(p.positions[p.group_ids == MEMBRANE_PROTEIN][:2]))
    return positives, negatives


def ribosome_diameter(ph):
    return float(np.median(ph.particle_info["diameter"][ph.particles.group_ids == RIBOSOME]))


def scored(detection, ph, diameter):
    """One-to-one scores for the ribosomes, and the fraction of each class picked."""
    p = ph.particles
    truth = Picks("t", p.positions[p.group_ids == RIBOSOME], voxel_size=VOXEL)
    result = evaluate_picks(Picks("t", detection.positions, voxel_size=VOXEL), truth,
                            diameter / 2)["one_to_one"]
    everything = Picks("t", np.concatenate([p.positions, [g["center"] for g in ph.gold]]),
                       np.concatenate([p.group_ids, np.full(len(ph.gold), GOLD)]),
                       voxel_size=VOXEL)
    per_class = evaluate_picks(Picks("t", detection.positions, voxel_size=VOXEL), everything,
                               diameter / 2)["per_class"]
    fractions = {c: v["one_to_one"]["recall"] for c, v in per_class.items()}
    return result, fractions
