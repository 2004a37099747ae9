#!/usr/bin/env bash
# deploy.sh: install releases of a service run by `launcher start`, upgrade
# the running supervisor to them, roll back, and prune old releases.
#
# Layout (the article's releases/N/main + current symlink):
#
#   $APP_ROOT/releases/VERSION/$APP   one directory per release, never edited
#   $APP_ROOT/current -> releases/VERSION
#
# and the supervisor runs as
#
#   launcher start --releases $APP_ROOT/releases --current $APP_ROOT/current \
#       --state-dir $LAUNCHER_STATE_DIR ... -- $APP_ROOT/current/$APP
#
# Usage:
#   deploy.sh install VERSION BINARY   stage BINARY as VERSION, activate it, prune
#   deploy.sh stage VERSION BINARY     only copy BINARY to releases/VERSION/$APP
#   deploy.sh activate VERSION         upgrade to an installed release
#   deploy.sh rollback [VERSION]       back to the previous release (or to VERSION)
#   deploy.sh prune                    keep the newest $KEEP releases
#   deploy.sh status                   releases, current, running generations
#
# Environment:
#   APP                 binary name (default: app); releases/VERSION/$APP
#   APP_ROOT            default /srv/$APP
#   KEEP                releases prune keeps, newest first (default 5); the
#                       current and the release of every generation the
#                       supervisor still has (active, standby during a
#                       probation, starting, draining, failed) are always kept,
#                       and so are a release a live process runs a file of
#                       and one a kept script release names (releases/V or
#                       ../V) or a kept release or an alias links to
#                       (releases/stable -> V, releases/S/$APP -> ../V/$APP);
#                       when the supervisor cannot tell (killed, leaving its
#                       state.json and workers, or not answering) prune
#                       deletes nothing: exit 1, a warning after an install
#   LAUNCHER            the launcher CLI (default: launcher in PATH, else
#                       /usr/local/bin/launcher)
#   LAUNCHER_STATE_DIR  the supervisor's state directory (default
#                       /run/launcher/$APP, as in launcher@.service)
#
# install and activate run `launcher upgrade --wait`: they return once the
# new release passed its probation and the old generation has exited, and
# fail (exit 1) when it was rolled back during its probation. A version
# already active but still in its probation or canary (an upgrade made by
# hand) is waited for and judged alike.
# When no supervisor runs on the state directory, activate and rollback only
# repoint `current`: the next `launcher start` (systemctl start) runs it;
# unless a killed supervisor's workers still serve another release, which
# that start adopts: then they refuse (exit 1) and change nothing.
# Every command is idempotent: installing the active version again changes
# nothing. A version is immutable: staging a different binary under an
# existing version is refused.
set -euo pipefail

APP="${APP:-app}"
APP_ROOT="${APP_ROOT:-/srv/$APP}"
KEEP="${KEEP:-5}"
LAUNCHER_STATE_DIR="${LAUNCHER_STATE_DIR:-/run/launcher/$APP}"
export LAUNCHER_STATE_DIR
if [ -z "${LAUNCHER:-}" ]; then
  LAUNCHER="$(command -v launcher || echo /usr/local/bin/launcher)"
fi
RELEASES="$APP_ROOT/releases"
CURRENT="$APP_ROOT/current"

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

say() {
  echo "deploy.sh: $*"
}

usage() {
  sed -n 's/^#   deploy.sh/deploy.sh/p' "$0" >&2
  exit 2
}

# check_version refuses what the supervisor would refuse as a version name.
check_version() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$ ]] ||
    die "bad version \"$1\": letters, digits, . _ + - (e.g. v2, 2024.06.01-1)"
}

# lock serialises deploys of this app.
lock() {
  mkdir -p "$RELEASES"
  exec 9>"$APP_ROOT/.deploy.lock"
  flock -w 300 9 || die "another deploy of $APP_ROOT still runs after 300s"
}

# running reports whether a supervisor serves the state directory.
running() {
  [ -S "$LAUNCHER_STATE_DIR/control.sock" ] && "$LAUNCHER" status >/dev/null 2>&1
}

# orphans_version prints the release that the workers of a killed
# supervisor still serve (the active generation's, the first `launcher
# status` names: "... but the workers of its generation 2 (v2) still
# serve (pids ...)"), or nothing when none does.
orphans_version() {
  "$LAUNCHER" status 2>&1 >/dev/null |
    sed -n 's/.*but the workers of its generation [0-9]* (\([^,)]*\)[,)].*/\1/p' || true
}

# live_versions prints the version of every generation the supervisor
# still has, one a line, from `launcher status --json` on stdin (two-space
# indented, one key a line): every state but exited (starting, active,
# standby, draining, failed), and any generation with a pid left. A standby
# generation is what a rollback goes back to during a probation, and its
# workers are restarted from its release: its directory must stay. The
# active one is marked " active GENERATION", and " trial UNTIL" after that
# while it is still in its probation (UNTIL: its end, RFC 3339) or canary
# (UNTIL: "canary", a weight below 100, no end known yet). Only the
# top-level "generations" array is read (the history's reports name
# versions too).
live_versions() {
  awk '
    /^  "generations": \[$/ { in_gens = 1; next }
    in_gens && /^  \]/      { in_gens = 0 }
    !in_gens                 { next }
    /^    \{/                { v = ""; s = ""; g = ""; pids = 0; until = ""; w = 100 }
    /^      "generation": /  { g = $2; gsub(/[",]/, "", g) }
    /^      "version": /     { v = $2; gsub(/[",]/, "", v) }
    /^      "state": /       { s = $2; gsub(/[",]/, "", s) }
    /^      "pids": \[$/     { pids = 1 }
    /^      "probation_until": / { until = $2; gsub(/[",]/, "", until) }
    /^      "weight": /      { w = $2; gsub(/[",]/, "", w); w += 0 }
    /^    \}/ {
      if (v == "") next
      if (s == "active") {
        if (until != "") print v " active " g " trial " until
        else if (w < 100) print v " active " g " trial canary"
        else print v " active " g
      } else if (s != "exited" || pids) print v
    }'
}

# verdict_of prints the verdict of the last upgrade report for generation
# GENERATION in `launcher status --json` on stdin (its "history"), empty if
# none.
verdict_of() {
  awk -v gen="$1" '
    /^  "history": \[$/ { in_hist = 1; next }
    in_hist && /^  \]/ { in_hist = 0 }
    !in_hist            { next }
    /^    \{/           { g = ""; v = "" }
    /^      "generation": / { g = $2; gsub(/[",]/, "", g) }
    /^      "verdict": / { v = $2; gsub(/[",]/, "", v) }
    /^    \}/           { if (g == gen) last = v }
    END                 { print last }'
}

# active_version prints the active generation's version, empty if none.
active_version() {
  "$LAUNCHER" status --json | live_versions | awk '$2 == "active" { print $1 }' | tail -n 1
}

# current_version prints the release `current` points at, empty if none.
current_version() {
  local target
  target="$(readlink "$CURRENT" 2>/dev/null)" || return 0
  basename "$target"
}

# point_current atomically repoints `current` at releases/VERSION.
point_current() {
  local tmp="$APP_ROOT/.current.$$"
  ln -sfn "releases/$1" "$tmp"
  mv -T "$tmp" "$CURRENT"
}

# releases_oldest_first prints installed versions, oldest install first.
releases_oldest_first() {
  find "$RELEASES" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %f\n' |
    sort -n | awk '{ print $2 }'
}

cmd_stage() {
  local version="$1" binary="$2" dest tmp
  check_version "$version"
  [ -f "$binary" ] || die "$binary: no such file"
  dest="$RELEASES/$version"
  if [ -e "$dest/$APP" ]; then
    cmp -s "$binary" "$dest/$APP" ||
      die "release $version exists with a different binary; releases are immutable, install it under a new version"
    say "release $version already staged"
  else
    [ ! -e "$dest" ] || die "$dest exists without $APP in it; remove it first"
    tmp="$(mktemp -d "$RELEASES/.stage.XXXXXX")"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    install -m 0755 "$binary" "$tmp/$APP"
    chmod 0755 "$tmp"
    mv -T "$tmp" "$dest"
    trap - EXIT
    say "staged $dest/$APP"
  fi
  touch "$dest" # install order, for prune
}

cmd_activate() {
  local version="$1"
  check_version "$version"
  local bin="$RELEASES/$version/$APP"
  if [ ! -x "$bin" ]; then
    # Say which: a release there but not runnable is not "not installed".
    [ -e "$bin" ] || [ -L "$bin" ] || die "release $version is not installed in $RELEASES"
    [ -e "$bin" ] || die "release $version: $bin is a symlink to nothing (or a loop)"
    die "release $version: $bin is not executable"
  fi
  if ! running; then
    # A killed supervisor's workers may serve on: the next start adopts
    # them and serves their release, not current's, so repointing current
    # to another would say what does not run.
    local serving
    serving="$(orphans_version)"
    if [ -n "$serving" ] && [ "$serving" != "$version" ]; then
      die "not activating $version: the supervisor on $LAUNCHER_STATE_DIR was killed and its workers still serve $serving, which the next launcher start adopts; start the service again, then activate $version"
    fi
    point_current "$version"
    if [ -n "$serving" ]; then
      say "no supervisor on $LAUNCHER_STATE_DIR, but its workers still serve $version: current -> releases/$version (start the service to adopt them)"
    else
      say "no supervisor on $LAUNCHER_STATE_DIR: current -> releases/$version (start the service to run it)"
    fi
    return
  fi
  if [ "$(active_version)" = "$version" ]; then
    await_verdict "$version"
  else
    upgrade "$version"
  fi
  [ "$(current_version)" = "$version" ] || point_current "$version"
  say "$version serves"
}

# upgrade runs `launcher upgrade --wait VERSION`: its progress lines go
# to stdout as they come, and it returns once the verdict is in and the old
# generation has exited (the probation, then the drain, up to
# --drain-timeout). Without --wait the upgrade would count as done once
# the new generation serves, and a release that crashes or breaches during
# its probation (rolled back to the standby generation) would pass. On a
# failure it prints launcher's reason and dies with one line saying what
# serves now.
upgrade() {
  local version="$1" err active tmp passed="" status=0
  # stderr (launcher's one-line reason) is kept to tell the failures apart;
  # stdout (the steps and the report) goes through as it comes, and to a
  # file, to tell an upgrade that passed before the supervisor went away.
  tmp="$(mktemp -d)"
  "$LAUNCHER" upgrade --wait "$version" 2>"$tmp/err" | tee "$tmp/out" || status=$?
  err="$(cat "$tmp/err")"
  if grep -q ' passed its ' "$tmp/out"; then passed=1; fi
  rm -rf "$tmp"
  [ -z "$err" ] || echo "$err" >&2
  if [ "$status" -eq 0 ] && running; then
    return 0
  fi
  case "$err" in
    *"the supervisor is stopping"*)
      die "upgrade to $version refused: the supervisor on $LAUNCHER_STATE_DIR is stopping: nothing serves once its drain is over, and the next start runs current ($(current_version))" ;;
  esac
  # The supervisor may be gone (a stop during the probation, or after the
  # verdict during the old generation's drain): no active.
  active="$(active_version 2>/dev/null)" || active=""
  if [ -z "$active" ] && ! running; then
    # Not "the previous release serves on", nor "serves": killed, its
    # workers serve whatever the kill left; stopped, nothing serves.
    local serving head="upgrade to $version cut short: the supervisor on $LAUNCHER_STATE_DIR"
    [ -z "$passed" ] || head="upgrade to $version passed its probation, but then the supervisor on $LAUNCHER_STATE_DIR"
    serving="$(orphans_version)"
    if [ -n "$serving" ]; then
      die "$head went away and its workers still serve $serving; start the service again (it adopts them), then look at launcher status"
    fi
    die "$head stopped: nothing serves now, and the next start runs current ($(current_version))"
  fi
  if [ "$status" -eq 0 ]; then
    return 0
  fi
  if [ "$active" = "$version" ]; then
    die "upgrade to $version failed its probation, but nothing was left to roll back to: $version serves; roll back or upgrade to a good release"
  fi
  case "$err" in
    *"rolled back"*) die "upgrade to $version rolled back during its probation: ${active:-the previous release} serves on" ;;
    *) die "upgrade to $version failed: ${active:-nothing} serves${active:+ on}" ;;
  esac
}

# await_verdict judges VERSION, found active when deploy.sh was asked to
# activate it. An upgrade made by hand (launcher upgrade VERSION, without
# --wait) may still be in its probation or canary: a release that crashes
# there is rolled back seconds later, so "already active" is no verdict.
# It polls `launcher status --json` while the active generation of VERSION
# is on trial, up to the end of its probation and a minute more (during a
# canary, whose end is not known yet, up to an hour; `launcher promote`
# ends it sooner), then judges as upgrade does: by which version is active
# and the verdict of the generation's last report.
await_verdict() {
  local version="$1" json line active gen trial until deadline now phase said=""
  deadline=$(($(date +%s) + 3600))
  while :; do
    json="$("$LAUNCHER" status --json 2>&1)" ||
      die "upgrade to $version: cannot tell its verdict: ${json##*$'\n'}"
    line="$(live_versions <<<"$json" | awk '$2 == "active"' | tail -n 1)"
    read -r _ _ gen trial until <<<"$line" || true
    # Active when activate looked, not now: rolled back (the supervisor
    # repointed current back too).
    active="${line%% *}"
    [ "$active" = "$version" ] ||
      die "upgrade to $version rolled back during its probation: ${active:-the previous release} serves on"
    [ "$trial" = trial ] || break
    now="$(date +%s)"
    phase=canary
    if [ "$until" != canary ]; then
      phase=probation
      deadline=$(($(date -d "$until" +%s) + 60))
    fi
    if [ -z "$said" ]; then
      say "$version is active but still in its $phase (an upgrade not made by deploy.sh): waiting for its verdict"
      said=1
    fi
    [ "$now" -le "$deadline" ] ||
      die "upgrade to $version: still in its probation or canary after the wait; see launcher status"
    sleep 0.5
  done
  case "$(verdict_of "$gen" <<<"$json")" in
    rolled_back | failed | breached)
      die "upgrade to $version failed its probation, but nothing was left to roll back to: $version serves; roll back or upgrade to a good release"
      ;;
  esac
  if [ -n "$said" ]; then
    say "upgrade to $version passed"
  else
    say "$version is already active"
  fi
}

# previous_release prints the release installed before VERSION, if any.
previous_release() {
  releases_oldest_first | awk -v v="$1" '$0 == v { print prev; exit } { prev = $0 }'
}

cmd_rollback() {
  local target="${1:-}" from out active
  if [ -n "$target" ]; then
    cmd_activate "$target"
    return
  fi
  if running; then
    if out="$("$LAUNCHER" rollback 2>&1)"; then
      echo "$out"
      active="$(active_version)"
      point_current "$active"
      say "rolled back to $active"
      return
    fi
    # The supervisor only remembers releases it ran itself (not across a
    # restart): fall back to the release installed before the active one.
    case "$out" in
      *"no previous release"*) from="$(active_version)" ;;
      *) die "rollback failed: $out" ;;
    esac
  else
    from="$(current_version)"
  fi
  [ -n "$from" ] || die "nothing to roll back from"
  target="$(previous_release "$from")"
  [ -n "$target" ] || die "no release installed before $from"
  say "rolling back from $from to $target"
  cmd_activate "$target"
}

# cmd_prune deletes old releases. It prunes only when it knows what runs:
# when `launcher status --json` answers, or when the state directory has no
# state.json (no supervisor ever ran there, or it stopped cleanly, which
# removes it: nothing runs but what a start would run, `current`). A
# supervisor killed (kill -9) leaves state.json, and its workers may serve
# on from any release, the standby's too, until a start adopts them; one
# stopped (kill -STOP) does not answer: then it deletes nothing and exits 1
# with one line saying why, or, after an install (AFTER set: the version
# installed), prints that line as a warning and returns 0: the install
# itself succeeded.
cmd_prune() {
  local after="${1:-}"
  [[ "$KEEP" =~ ^[1-9][0-9]*$ ]] || die "KEEP=$KEEP: want a number >= 1"
  local -A keep=()
  local v n total json=""
  local -a all
  if ! json="$("$LAUNCHER" status --json 2>&1)"; then
    if [ -e "$LAUNCHER_STATE_DIR/state.json" ]; then
      v="not pruning: cannot tell which releases run (${json##*$'\n'})"
      if [ -n "$after" ]; then
        echo "deploy.sh: warning: $after installed, $v" >&2
        return 0
      fi
      die "$v"
    fi
    json=""
  fi
  v="$(current_version)"
  [ -z "$v" ] || keep[$v]=1
  while read -r v _; do keep[$v]=1; done < <(live_versions <<<"$json")
  while read -r v; do keep[$v]=1; done < <(running_versions)
  # An alias (releases/stable -> v3) is the operator's pointer: what it
  # leads to stays, or it would dangle (a new user's recheck).
  for v in "$RELEASES"/*; do
    [ ! -L "$v" ] || keep[${v##*/}]=1
  done
  mapfile -t all < <(releases_oldest_first)
  total="${#all[@]}"
  n=0
  for v in "${all[@]}"; do
    n=$((n + 1))
    [ "$n" -le $((total - KEEP)) ] || keep[$v]=1
  done
  # A release that needs others is a script that runs them: keep what
  # every kept script names, and what those name in turn.
  local -a todo=("${!keep[@]}")
  local -A why=()
  while [ "${#todo[@]}" -gt 0 ]; do
    local from="${todo[0]}"
    todo=("${todo[@]:1}")
    while read -r v; do
      if [ ! -d "$RELEASES/$v" ] || [ -n "${keep[$v]:-}" ]; then
        continue
      fi
      keep[$v]=1
      why[$v]="$from"
      todo+=("$v")
    done < <(named_versions "$from" && linked_versions "$from")
  done
  for v in "${all[@]}"; do
    if [ -n "${keep[$v]:-}" ]; then
      [ -z "${why[$v]:-}" ] || say "kept release $v: release ${why[$v]} runs it"
      continue
    fi
    rm -rf "${RELEASES:?}/$v"
    say "pruned release $v"
  done
}

# releases_real prints $RELEASES with every symbolic link resolved, as
# the kernel's paths (/proc/PID/exe, readlink -f) name it.
releases_real() {
  (cd "$RELEASES" && pwd -P)
}

# running_versions prints the releases a live process runs a file of (its
# /proc/PID/exe): a script release's worker runs another release's binary
# (exec releases/3/hello), which its next restart needs again.
running_versions() {
  local dir
  dir="$(releases_real)" || return 0
  find /proc -mindepth 2 -maxdepth 2 -path '/proc/[0-9]*/exe' -printf '%l\n' 2>/dev/null |
    awk -v d="$dir/" 'index($0, d) == 1 { v = substr($0, length(d) + 1); sub(/\/.*/, "", v); print v }' | sort -u
}

# linked_versions prints the releases that release VERSION leads to
# through symbolic links: the directory itself (releases/stable -> v3)
# or a file in it (releases/sL/hello -> ../v3/hello). current naming such
# an alias had the release behind it pruned (a new user's recheck).
linked_versions() {
  local dir f real
  dir="$(releases_real)" || return 0
  for f in "$RELEASES/$1" "$RELEASES/$1"/*; do
    real="$(readlink -f "$f" 2>/dev/null)" || continue
    case "$real" in
      "$dir"/*)
        real="${real#"$dir"/}"
        echo "${real%%/*}"
        ;;
    esac
  done | sort -u
}

# named_versions prints the names that release VERSION's scripts (its
# files that begin with #!) give as RELEASES_DIR_NAME/OTHER or ../OTHER
# (a path from the script's own directory); the caller keeps those that
# are releases. A path built from a variable is not seen: a live worker
# that runs it is (running_versions).
named_versions() {
  local f base
  base="$(basename "$RELEASES")"
  for f in "$RELEASES/$1"/*; do
    if [ ! -f "$f" ] || [ "$(head -c 2 "$f" 2>/dev/null)" != '#!' ]; then
      continue
    fi
    grep -oE "(^|[^A-Za-z0-9._+-])($base|\.\.)/[A-Za-z0-9][A-Za-z0-9._+-]*" "$f" 2>/dev/null |
      sed -E "s|^.*/||"
  done | sort -u
}

cmd_status() {
  local cur v mark
  cur="$(current_version)"
  echo "releases in $RELEASES (oldest first), current -> ${cur:-none}:"
  while read -r v; do
    mark=" "
    [ "$v" != "$cur" ] || mark="*"
    echo "  $mark $v"
  done < <(releases_oldest_first)
  if running; then
    "$LAUNCHER" status
  elif [ -n "$(orphans_version)" ]; then
    # Killed: launcher's own line names the workers that serve on.
    "$LAUNCHER" status 2>&1 | sed 's/^launcher: status: //' || true
  else
    echo "no supervisor on $LAUNCHER_STATE_DIR"
  fi
}

main() {
  [ "$#" -ge 1 ] || usage
  local cmd="$1"
  shift
  case "$cmd" in
    install)
      [ "$#" -eq 2 ] || usage
      lock
      cmd_stage "$1" "$2"
      cmd_activate "$1"
      cmd_prune "$1"
      ;;
    stage)
      [ "$#" -eq 2 ] || usage
      lock
      cmd_stage "$1" "$2"
      ;;
    activate | upgrade)
      [ "$#" -eq 1 ] || usage
      lock
      cmd_activate "$1"
      ;;
    rollback)
      [ "$#" -le 1 ] || usage
      lock
      cmd_rollback "$@"
      ;;
    prune)
      [ "$#" -eq 0 ] || usage
      lock
      cmd_prune
      ;;
    status)
      [ "$#" -eq 0 ] || usage
      cmd_status
      ;;
    -h | --help | help)
      sed -n 's/^#   deploy.sh/deploy.sh/p' "$0"
      ;;
    *) usage ;;
  esac
}

main "$@"
