"""register: make a blessed candidate an immutable, numbered version with lineage.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("register")
