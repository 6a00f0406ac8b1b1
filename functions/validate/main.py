"""validate: check an uploaded (or requested) dataset against its contract.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("validate")
