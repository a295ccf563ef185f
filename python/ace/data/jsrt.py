"""The layout of the JSRT data (``../shared/data/jsrt``): SCR segmentation masks per structure
and the HybridGNet landmarks (Gaggion et al.), as their files define them. Real-data code reads
it from here; the phantom draws its ground truth in the same layout so probes run on both.

"left"/"right" are the patient's sides. Landmarks are x, y pixel coordinates, in the same
anatomical order on every image; the landmark arrays concatenate the structures in
``LANDMARK_ORDER`` (``landmarks_dev.csv`` rows ``structure, index`` map to row
``LANDMARK_OFFSETS[structure] + index``).
"""
import numpy as np

STRUCTURES = ("heart", "left_lung", "right_lung", "left_clavicle", "right_clavicle")
LANDMARK_COUNTS = {"right_lung": 44, "left_lung": 50, "heart": 26}
LANDMARK_ORDER = ("right_lung", "left_lung", "heart")
LANDMARK_OFFSETS = dict(zip(LANDMARK_ORDER, np.cumsum([0] + [LANDMARK_COUNTS[s] for s in LANDMARK_ORDER]).tolist()))
LANDMARKS = sum(LANDMARK_COUNTS.values())
