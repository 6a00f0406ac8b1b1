"""launch_batch: start the batch prediction job for each batch-requested event.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("launch_batch")
