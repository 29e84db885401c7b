#!/usr/bin/env bash
# Runs emostream locally. Today this starts the Kafka-wire broker and the MongoDB-wire server
# (or reuses KAFKA_BROKERS / MONGODB_URI) and keeps them up until Ctrl-C; the functions, the
# local AWS emulation and the browser client join as they land (see README, "Status").
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/servers.sh" run -- bash -c '
  echo
  echo "emostream demo: servers are up"
  echo "  KAFKA_BROKERS=$KAFKA_BROKERS"
  echo "  MONGODB_URI=$MONGODB_URI"
  echo
  echo "Coming next: the ingest, aggregate and notify functions under the local stack,"
  echo "and the browser client. Press Ctrl-C to stop the servers."
  while true; do sleep 3600; done
'
