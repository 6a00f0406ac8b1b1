#!/usr/bin/env bash
# Cloud Build, cloudbuild/deploy.yaml step publish-retrain, after add-models: one
# retrain-requested event per model the installation holds (each models/<model>/
# definition.json in the artifact bucket), naming the model and carrying the commit SHA,
# so the new code retrains every model on its latest data and the lineage records the
# commit. The commit is the idempotency key: a re-run of the build starts no second run
# of a model.
#
# Reads, from the step's environment: ARTIFACT_BUCKET (_ARTIFACT_BUCKET), RETRAIN_TOPIC
# (_RETRAIN_TOPIC), COMMIT_SHA.
set -euo pipefail

fail() {
  echo "publish-retrain: $*" >&2
  exit 1
}

[[ "${COMMIT_SHA:-}" =~ ^[0-9a-f]{7,40}$ ]] || fail "COMMIT_SHA='${COMMIT_SHA:-}' is not a commit SHA"
[ -n "${ARTIFACT_BUCKET:-}" ] || fail "ARTIFACT_BUCKET is not set (the trigger's _ARTIFACT_BUCKET)"
[ -n "${RETRAIN_TOPIC:-}" ] || fail "RETRAIN_TOPIC is not set"

# The application's rule for a model name; anything else under models/ is not a model.
name_rule='^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$'
installed="gs://$ARTIFACT_BUCKET/models/"

definitions=$(gcloud storage ls "${installed}*/definition.json") \
  || fail "no model is installed (no ${installed}<model>/definition.json): nothing to retrain"

published=0
while IFS= read -r url; do
  model=${url#"$installed"}
  model=${model%/definition.json}
  if [[ ! "$model" =~ $name_rule ]]; then
    echo "publish-retrain: skipping $url: not a model's definition" >&2
    continue
  fi
  gcloud pubsub topics publish "$RETRAIN_TOPIC" --attribute=event_type=retrain-requested \
    --message="{\"schema_version\":1,\"event_type\":\"retrain-requested\",\"model\":\"$model\",\"commit_sha\":\"$COMMIT_SHA\"}"
  published=$((published + 1))
done <<<"$definitions"

[ "$published" -gt 0 ] || fail "no model definition under $installed: nothing to retrain"
echo "publish-retrain: $published model(s) asked to retrain on $COMMIT_SHA"
