"""evaluate: score the candidate against thresholds and the champion on a fixed hold-out.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("evaluate")
