#!/usr/bin/env bash
# Starts `gitmesh serve` on the bundled policies with no network: it makes a
# local git repository from policies/ (committing any change made there since
# the last run) and follows its main branch. Commit in that repository and the
# daemon publishes the commit at once.
#
# Usage: examples/quickstart.sh [BIN] [RUN_DIR] [extra serve flags...]
set -euo pipefail

bin=${1:-bin/gitmesh}
run_dir=${2:-.run}
shift $(( $# > 2 ? 2 : $# ))
here=$(cd "$(dirname "$0")/.." && pwd)
repo="$run_dir/repo"

git_() { git -C "$repo" -c user.name=gitmesh -c user.email=gitmesh@localhost -c commit.gpgsign=false "$@"; }

mkdir -p "$repo"
if [ ! -d "$repo/.git" ]; then
  git init -q -b main "$repo"
fi
mkdir -p "$repo/policies"
rsync_like() { rm -rf "$repo/policies" && cp -R "$here/policies" "$repo/policies"; }
rsync_like
git_ add -A
if ! git_ diff --cached --quiet 2>/dev/null || ! git_ rev-parse -q --verify HEAD >/dev/null; then
  git_ commit -q -m "Policies from the gitmesh source tree" || true
fi

cat <<MSG
Policy repository: $repo (branch main, policies/)
  Try: edit $repo/policies/permissions/web-to-backend.yaml, then
       git -C $repo commit -am "..."   and watch the log and 'bin/gitmesh status'.
MSG
exec "$bin" serve --repo "$repo" --path policies --state-dir "$run_dir/state" "$@"
