"""deploy: move the staging service to the registered version, smoke-tested.

Cloud Function (gen2) fed by the Pub/Sub subscription topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("deploy")
