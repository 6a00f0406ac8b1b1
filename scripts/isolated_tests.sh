#!/usr/bin/env bash
# The test suite in a container the build's credentials do not reach: the deploy build
# runs as the deployer, and the suite runs code no deploy needs (every test and every
# package they install). Cloud Build serves a build's service-account credentials (its
# metadata server) on the `cloudbuild` Docker network only; this container runs on
# Docker's default bridge network, with a copy of the workspace rather than the
# workspace itself, so the suite can neither call Google Cloud as the deployer nor
# change what the later steps build and apply.
#
# Usage: GCLOUD_VERSION=528.0.0 bash scripts/isolated_tests.sh IMAGE
#   IMAGE: the image the suite runs on (the python image of the pull-request checks);
#   GCLOUD_VERSION: scripts/ci_test_tools.sh's argument.
set -euo pipefail

image="${1:?usage: scripts/isolated_tests.sh IMAGE}"
gcloud_version="${GCLOUD_VERSION:?set GCLOUD_VERSION (scripts/ci_test_tools.sh)}"
name="modelrail-tests-$$"

# The same command and environment as the pull-request checks' test step; the script
# reads GCLOUD_VERSION inside the container, so its value is never shell text.
docker create --name="$name" --network=bridge --workdir=/workspace \
    --env=CI=true --env=GCLOUD_VERSION="$gcloud_version" \
    --env=PATH=/workspace/build/tools/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$image" bash -c 'bash scripts/ci_test_tools.sh "$GCLOUD_VERSION" && make test' >/dev/null
trap 'docker rm --force "$name" >/dev/null' EXIT
docker cp /workspace/. "$name:/workspace"
# Exits with the suite's status.
docker start --attach "$name"
