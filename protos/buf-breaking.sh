#!/usr/bin/env bash
# `buf breaking` for protos/ (FILE rules, protos/buf.yaml): the protos of the working tree against the
# protos as they last landed on main. Run from anywhere in the checkout; `make lint` and `make test` run it.
#
# Which commit "last landed", so that one rule works in a contributor's checkout and in CI's clone:
#   - with a remote main (origin/main): where HEAD left it (git merge-base HEAD origin/main), so a
#     branch's own commits and uncommitted edits are what is checked, and fields main gained since are
#     not taken for deletions;
#   - without one (a local checkout, or a clone with no remote): HEAD;
#   - and when that base is HEAD itself while protos/ has no uncommitted edits (CI's clone of main, or a
#     checkout right after a commit), HEAD's first parent: the commit that landed is checked against
#     the main it landed on. A shallow clone without that parent compares with HEAD, and says so.
# (Against '.git#branch=main' a clone of main would compare main with itself and never fail.)
# BUF_BREAKING_AGAINST=<buf input> replaces all of this, e.g. '.git#tag=v0.1.0,subdir=protos'.
# BUF=<path to buf> picks the binary (default: buf on PATH).
set -euo pipefail

buf="${BUF:-buf}"
if ! root="$(git rev-parse --show-toplevel 2>/dev/null)"; then
  echo "buf breaking: not a git checkout, nothing to compare with (skipped)" >&2
  exit 0
fi
cd "$root"

against="${BUF_BREAKING_AGAINST:-}"
if [ -z "$against" ]; then
  base="$(git rev-parse HEAD)"
  if git rev-parse --verify --quiet origin/main >/dev/null; then
    if ! base="$(git merge-base HEAD origin/main)"; then
      echo "buf breaking: no history shared with origin/main here (a shallow clone?); comparing with HEAD" >&2
      base="$(git rev-parse HEAD)"
    fi
  fi
  if [ "$base" = "$(git rev-parse HEAD)" ] && [ -z "$(git status --porcelain -- protos)" ]; then
    if parent="$(git rev-parse --verify --quiet 'HEAD^1')"; then
      base="$parent"
    else
      echo "buf breaking: HEAD has no parent here (a shallow clone?); comparing with HEAD" >&2
    fi
  fi
  against=".git#ref=${base},subdir=protos"
fi

echo "buf breaking protos --against ${against}"
exec "$buf" breaking protos --against "$against"
