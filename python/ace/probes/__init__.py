"""Probes of what an encoder has learned: the measurements of DESIGN.md section 6.

Every probe takes an encoder (anything with `config` and `embed(images)` like
`ace.Encoder`) and NumPy inputs, and returns a dict of plain numbers and arrays.
Accuracy-type probes put their headline under `accuracy`, with the number of
decisions (`trials`) and the chance level (`chance`) beside it. Every headline number
carries a 95% percentile bootstrap interval that resamples images (`ci95`; `auc_ci95`,
`dice_ci95` for the transfer probes; see `bootstrap_ci`): the images, not the trials cut
from them, are the independent units.

Conventions shared by the probes:

* Images are (N, H, W) arrays, uint8, uint16 or float in [0, 1]. Crops are cut from
  the float image and handed to `enc.embed`, which resizes each one to the
  encoder's input size.
* f(x), the embedding of an image or a crop, is its CLS token (`features="cls"`) or
  the mean of its patch tokens (`features="mean"`). The default, `features="default"`,
  is the representation the encoder's method trains, its `default_features` ("mean"
  for ACE, whose losses never touch the CLS token; "cls" for DINO-style), and "cls"
  for encoders without that attribute. Results name the choice under `features`.
* Coordinates are x, y pixels with pixel centres at integer positions, as in the
  JSRT landmarks and the phantom. A window of side P centred on (x, y) starts at
  pixel round(x - (P - 1) / 2); windows that reach past the border are zero-padded.
* Token (i, j) of an (h, w) token map covers rows [i H/h, (i+1) H/h) and columns
  [j W/w, (j+1) W/w) of the input image, so its centre is at
  x = (j + 0.5) W/w - 0.5, y = (i + 0.5) H/h - 0.5.
* Probes that sample are deterministic given `seed`.

The probes live in modules named after what they measure: `global_embedding`
(compositionality, decompositionality, retrieval), `landmarks` (correspondence, landmark
embeddings, symmetry), `transfer` (classification, segmentation), `pairs` (FIRE-style
correspondence between image pairs), `keypoint_detection` (key points fine-tuned end to end)
and `gradcam` (weakly supervised localization); `common` holds what they share.
Every public name is importable as `ace.probes.NAME`.
"""
from .common import bootstrap_ci, resolve_features
from .global_embedding import compositionality, decompositionality, retrieval
from .landmarks import (_KeyImage, _Templates, landmark_correspondence, landmark_embeddings, symmetry,  # noqa: F401
                        template_matching_baseline)
from .keypoint_detection import decode_heatmaps, gaussian_heatmaps, keypoints
from .gradcam import grad_cam, localization
from .pairs import pair_correspondence
from .transfer import _auc, dice, fit_linear_probe, linear_probe_classification, segmentation  # noqa: F401

__all__ = ["compositionality", "decompositionality", "retrieval", "landmark_correspondence",
           "template_matching_baseline", "landmark_embeddings", "symmetry", "linear_probe_classification",
           "fit_linear_probe", "segmentation", "dice", "bootstrap_ci", "resolve_features", "pair_correspondence",
           "keypoints", "gaussian_heatmaps", "decode_heatmaps", "localization", "grad_cam"]
