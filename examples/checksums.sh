#!/bin/sh
# Turns every object under a prefix into a checksum object under another prefix.
#
#   examples/checksums.sh INPUT_PREFIX OUTPUT_PREFIX
#
# With file:// prefixes it runs on a coordinator and worker started for the occasion:
#   examples/checksums.sh "file://$PWD/src/" "file:///tmp/checksums/"
# With s3:// prefixes it submits to the cluster in DROVER_COORDINATOR and waits:
#   examples/checksums.sh s3://my-bucket/texts/ s3://my-bucket/checksums/
# The outputs are listed in OUTPUT_PREFIX/ledger-<id>/<job id>/_manifest.json, under the id of
# the ledger that ran the job (drover local prints it; drover status shows a cluster's).
set -eu
input=${1:?usage: checksums.sh INPUT_PREFIX OUTPUT_PREFIX}
output=${2:?usage: checksums.sh INPUT_PREFIX OUTPUT_PREFIX}
jobs=$(mktemp --suffix=.jsonl)
trap 'rm -f "$jobs"' EXIT
cat > "$jobs" <<JOB
{"name": "checksums", "cmd": ["sh", "-c", "cd in && find . -type f | sort | while read -r f; do mkdir -p \"../out/\$(dirname \"\$f\")\"; sha256sum \"\$f\" > \"../out/\$f.sha256\"; done"], "inputs": [{"from": "$input", "to": "in/"}], "outputs": {"from": "out", "to": "$output"}}
JOB
drover=${DROVER:-drover}
case "$input$output" in
  *s3://*) "$drover" submit "$jobs" --batch checksums --wait ;;
  *) "$drover" local --workers 1 "$jobs" ;;
esac
