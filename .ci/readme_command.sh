#!/usr/bin/env bash
# Runs one of the README's two fenced commands (marked <!-- ci:install --> / <!-- ci:test -->),
# so CI executes exactly what the README tells a user to type.
set -euo pipefail
marker="ci:$1"
command=$(awk -v m="<!-- $marker -->" '
  $0 == m { found = 1; next }
  found && /^```/ { if (inside) exit; inside = 1; next }
  found && inside { print }
' README.md)
if [ -z "$command" ]; then
  echo "README.md has no command marked <!-- $marker -->" >&2
  exit 1
fi
echo "+ $command"
bash -euo pipefail -c "$command"
