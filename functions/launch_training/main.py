"""launch_training: start the training job (a Cloud Run job) for a validated dataset.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("launch_training")
