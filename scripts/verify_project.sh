#!/usr/bin/env bash
# What only a real project can confirm (docs/deploy.md): the functions built, an upload
# runs to a new staging version, the staging image starts with it and serves a
# prediction. Run after a deploy, with gcloud credentials that may read the project,
# upload to the data bucket and call the staging service (staging_service.invoker_members).
#
#   scripts/verify_project.sh --project=P --region=R --csv=FILE --model=NAME --row=JSON
#       [--prefix=modelrail] [--timeout=1800]
#
# One line per check; exits non-zero at the first that fails.
set -euo pipefail

prefix=modelrail
timeout=1800
project="" region="" csv="" model="" row=""
for arg in "$@"; do
  case "$arg" in
    --project=*) project="${arg#*=}" ;;
    --region=*) region="${arg#*=}" ;;
    --csv=*) csv="${arg#*=}" ;;
    --model=*) model="${arg#*=}" ;;
    --row=*) row="${arg#*=}" ;;
    --prefix=*) prefix="${arg#*=}" ;;
    --timeout=*) timeout="${arg#*=}" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
for required in project region csv model row; do
  if [ -z "${!required}" ]; then
    echo "--$required is required" >&2
    exit 2
  fi
done

ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*" >&2; exit 1; }

artifacts="gs://$project-$prefix-artifacts"
data="gs://$project-$prefix-data"
service="$prefix-staging-$model"  # each model's own staging service

# The version the staging alias names now (0: none yet).
alias_version() {
  gcloud storage cat "$artifacts/models/$model/aliases/staging.json" --project="$project" \
    2>/dev/null | sed -n 's/.*"version": *\([0-9][0-9]*\).*/\1/p' || true
}

# 1. Every stage function built and serves (a build denied its source ends FAILED).
for stage in validate launch-training evaluate register deploy; do
  state=$(gcloud functions describe "$prefix-$stage" --region="$region" --project="$project" \
    --format='value(state)')
  [ "$state" = ACTIVE ] || fail "function $prefix-$stage is ${state:-missing}, not ACTIVE"
  ok "function $prefix-$stage is ACTIVE"
done

# 2. An upload, under a name of its own (a run is named by the object), reaches staging.
before=$(alias_version)
before=${before:-0}
object="uploads/$model/verify-$(date +%Y%m%d%H%M%S)-$(basename "$csv")"
gcloud storage cp "$csv" "$data/$object" --project="$project"
ok "uploaded $data/$object (staging serves version ${before} before it)"
deadline=$(($(date +%s) + timeout))
after=$before
while [ "$after" -le "$before" ]; do
  [ "$(date +%s)" -lt "$deadline" ] \
    || fail "no new staging version within ${timeout}s: gcloud logging read 'jsonPayload.stage=\"validate\"' --project=$project"
  sleep 15
  after=$(alias_version)
  after=${after:-0}
done
ok "the staging alias names version $after"

# 3. The staging image started with that version: its latest revision is ready.
created=$(gcloud run services describe "$service" --region="$region" --project="$project" \
  --format='value(status.latestCreatedRevisionName)')
ready=$(gcloud run services describe "$service" --region="$region" --project="$project" \
  --format='value(status.latestReadyRevisionName)')
[ -n "$ready" ] && [ "$ready" = "$created" ] \
  || fail "staging revision $created is not ready (latest ready: ${ready:-none})"
ok "staging revision $ready is ready"

# 4. It serves that version, and /predict answers.
url=$(gcloud run services describe "$service" --region="$region" --project="$project" \
  --format='value(status.url)')
token=$(gcloud auth print-identity-token)
readyz=$(curl -sS --fail -H "Authorization: Bearer $token" "$url/readyz")
served=$(printf '%s' "$readyz" | sed -n 's/.*"version": *\([0-9][0-9]*\).*/\1/p')
[ "$served" = "$after" ] || fail "staging serves version ${served:-none}, not $after: $readyz"
ok "staging serves version $served"
answer=$(curl -sS --fail -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  "$url/predict" -d "{\"dataframe_records\": [$row]}") || fail "/predict refused the row"
ok "/predict answered: $answer"
