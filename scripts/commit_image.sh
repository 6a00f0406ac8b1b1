#!/usr/bin/env bash
# Build or push one image of this commit, once.
#
# The image repository's tags are immutable, and a rebuild is not bit-for-bit the image
# pushed before (timestamps, newer base layers), so re-running the deploy build of a
# commit whose image is already in the repository would fail at push. If the commit's tag
# exists, both actions leave it as it is; the tests and the rest of the build still run.
#
# Usage (Cloud Build, gcr.io/cloud-builders/docker, from the repository root):
#   bash scripts/commit_image.sh build IMAGE:TAG DOCKERFILE
#   bash scripts/commit_image.sh push IMAGE:TAG
set -euo pipefail

action="${1:?usage: commit_image.sh build|push IMAGE:TAG [DOCKERFILE]}"
image="${2:?usage: commit_image.sh build|push IMAGE:TAG [DOCKERFILE]}"

published() {
    docker manifest inspect "$image" > /dev/null 2>&1
}

case "$action" in
    build)
        dockerfile="${3:?usage: commit_image.sh build IMAGE:TAG DOCKERFILE}"
        if published; then
            echo "$image is already in the repository: not rebuilt"
            exit 0
        fi
        docker build --file="$dockerfile" --tag="$image" .
        ;;
    push)
        if published; then
            echo "$image is already in the repository: not pushed again"
            exit 0
        fi
        # Another build of the same commit may have pushed it since the check.
        docker push "$image" || published
        ;;
    *)
        echo "usage: commit_image.sh build|push IMAGE:TAG [DOCKERFILE]" >&2
        exit 2
        ;;
esac
