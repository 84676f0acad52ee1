#!/usr/bin/env bash
# Trains the model zoo on a many-core machine that has no Node (the GPU machine's CPUs; see prepare.sh), in three
# phases; run them in one command, since that machine ends every process a command started when it returns:
#
#   bash bench/gpu/zoo.sh start 900 && bash bench/gpu/zoo.sh wait 500; bash bench/gpu/zoo.sh collect "$OUT"
#
#   bash bench/gpu/zoo.sh start [steps]   unpack node, start every job detached (setsid), return
#   bash bench/gpu/zoo.sh wait [seconds]  print progress until every job has ended or the time is up
#   bash bench/gpu/zoo.sh collect DIR     stop what still runs (SIGTERM: a checkpoint at the current step), then export
#                                         every finished run into DIR/zoo.tar (models/: float16 weights + manifest.json,
#                                         src/zoo/; logs and metrics beside them; unfinished runs' folders under
#                                         models/unfinished/, to --resume elsewhere)
#
# ZOO_ONLY="code-parallel-k4 code-sequential-d3" trains only the named jobs; ZOO_WORKERS=n gives every job n workers;
# ZOO_SERIAL=1 trains the jobs one after another (the baseline for timing the parallel run: `wait` prints the wall time).
# ZOO_PRESET=tiny picks another preset.
#
# Jobs, per corpus (code, prose): the AR baseline, parallel heads k = 2, 4, 8, sequential modules D = 1, 2, 3 (the
# `deep` preset, equal steps), and on that corpus's AR baseline once it has finished (at once when ZOO_TRUNKS names a
# folder holding <corpus>-ar/model.ckpt, or is `zoo`: the committed zoo's): Medusa-1 K = 5 and the feature drafters. Each job is one
# `mtp train`; with 28 cores or more, the costlier jobs get more data-parallel threads (see jobs).
set -uo pipefail
cd "$(dirname "$0")/../.."
d=.device
runs=${ZOO_RUNS:-/tmp/zoo}
node=/tmp/node
preset=${ZOO_PRESET:-deep}

jobs() { # name, data-parallel workers, flags of every trunk job: workers in proportion to the step's cost (par k=8 ≈ 2.7×
  # the AR step), so that all end together, when the machine has the cores (ZOO_WORKERS=n gives every job n)
  local w1=1 w2=2 w4=4
  if (( $(nproc) < 28 )); then w2=1 w4=1; fi
  if [ -n "${ZOO_WORKERS:-}" ]; then w1=$ZOO_WORKERS w2=$ZOO_WORKERS w4=$ZOO_WORKERS; fi
  for corpus in code prose; do
    echo "$corpus-ar $w1 --train.corpus=$corpus --mtp.kind=none"
    echo "$corpus-parallel-k2 $w1 --train.corpus=$corpus --mtp.kind=parallel --mtp.k=2"
    echo "$corpus-parallel-k4 $w2 --train.corpus=$corpus --mtp.kind=parallel --mtp.k=4"
    echo "$corpus-parallel-k8 $w4 --train.corpus=$corpus --mtp.kind=parallel --mtp.k=8"
    echo "$corpus-sequential-d1 $w1 --train.corpus=$corpus --mtp.kind=sequential --mtp.depth=1"
    echo "$corpus-sequential-d2 $w2 --train.corpus=$corpus --mtp.kind=sequential --mtp.depth=2"
    echo "$corpus-sequential-d3 $w2 --train.corpus=$corpus --mtp.kind=sequential --mtp.depth=3"
  done | if [ -n "${ZOO_ONLY:-}" ]; then grep -wFf <(tr ' ' '\n' <<< "$ZOO_ONLY"); else cat; fi
}

wanted() { [ -z "${ZOO_ONLY:-}" ] || grep -qw -- "$1" <<< "$ZOO_ONLY"; }

train() { # train NAME STEPS WORKERS FLAGS...: one detached mtp train, its command line saved beside its run folder
  local name=$1 steps=$2 workers=$3
  shift 3
  mkdir -p "$runs/$name"
  echo "npm run mtp -- train --preset=$preset --train.steps=$steps --train.backend=wasm --train.workers=$workers --out=runs/zoo/$name ${*//$runs/runs/zoo}" > "$runs/$name.command"
  if [ -n "${ZOO_SERIAL:-}" ]; then # in this shell, one after another (start runs itself detached then)
    "$node" "$d/mtp.js" train --preset="$preset" --train.steps="$steps" --train.backend=wasm --train.workers="$workers" --out="$runs/$name" "$@" > "$runs/$name.log" 2>&1 < /dev/null
    return
  fi
  # shellcheck disable=SC2086
  # under a shell that waits for it: the CLI stops cleanly when its parent exits, and `start` returns at once
  setsid nohup bash -c '"$@"; exit $?' train "$node" "$d/mtp.js" train --preset="$preset" --train.steps="$steps" --train.backend=wasm \
    --train.workers="$workers" --out="$runs/$name" "$@" > "$runs/$name.log" 2>&1 < /dev/null &
}

serial() { # serial STEPS: every trunk job, then the frozen ones, one at a time (ZOO_SERIAL=1)
  while read -r name workers flags; do
    # shellcheck disable=SC2086
    train "$name" "$1" "$workers" $flags
  done < <(jobs)
  for corpus in code prose; do
    for job in medusa1-k5 feature feature-fused; do
      wanted "$corpus-$job" && bash "$0" frozen "$corpus" "$job" "$1"
    done
  done
}

case "${1:-}" in
  start)
    steps=${2:-1600}
    xz -dc $d/node.xz > $node && chmod +x $node
    [ -e node_modules ] || ln -s $d/node_modules node_modules
    [ -e ../models ] || ln -s "$PWD/models" ../models # zoo:NAME from the bundle in $d looks two folders up
    mkdir -p $runs
    echo "$(nproc) cores; $(jobs | wc -l) trunk jobs, $steps steps each, preset $preset${ZOO_SERIAL:+, one at a time}"
    date +%s > "$runs/started"
    if [ -n "${ZOO_SERIAL:-}" ]; then
      setsid nohup bash "$0" serial "$steps" > "$runs/serial.log" 2>&1 < /dev/null &
      exit 0
    fi
    while read -r name workers flags; do
      # shellcheck disable=SC2086
      train "$name" "$steps" "$workers" $flags
    done < <(jobs)
    for corpus in code prose; do # Medusa-1 heads and the feature drafters once the baseline is trained
      for job in medusa1-k5 feature feature-fused; do
        wanted "$corpus-$job" || continue
        setsid nohup bash -c "until [ -n '${ZOO_TRUNKS:-}' ] || grep -qE '^(done|error|stopped)' $runs/$corpus-ar.log; do sleep 5; done; \
          { [ -n '${ZOO_TRUNKS:-}' ] || grep -q '^done:' $runs/$corpus-ar.log; } && bash $0 frozen $corpus $job $steps" > "$runs/$corpus-$job.wait.log" 2>&1 < /dev/null &
      done
    done
    sleep 20
    tail -n 2 $runs/*.log | grep -E "backend|error" || true
    ;;
  serial) # internal: serial STEPS
    serial "$2"
    ;;
  frozen) # internal: frozen CORPUS JOB STEPS — a model on the frozen trunk of CORPUS-ar (trained here, or carried in $runs)
    flags=(--mtp.kind=medusa --mtp.heads=5 --mtp.frozenTrunk=true)
    [ "$3" = feature ] && flags=(--mtp.kind=feature --mtp.features=last)
    [ "$3" = feature-fused ] && flags=(--mtp.kind=feature --mtp.features=fused)
    init="${ZOO_TRUNKS:-$runs}/$2-ar/model.ckpt"
    [ "${ZOO_TRUNKS:-}" = zoo ] && init="zoo:$2-ar"
    train "$2-$3" "$4" "${ZOO_WORKERS:-$(( $(nproc) < 28 ? 1 : 2 ))}" --train.corpus="$2" "${flags[@]}" --init="$init"
    ;;
  wait)
    until=$(( $(date +%s) + ${2:-540} ))
    while (( $(date +%s) < until )); do
      running=$(pgrep -fc "mtp.js train" || true)
      printf '%s running:' "$(date +%T)"
      for m in $runs/*/metrics.jsonl; do printf ' %s@%s' "$(basename "$(dirname "$m")")" "$(tail -n 1 "$m" | grep -o '"step":[0-9]*' | cut -d: -f2)"; done
      echo
      (( running == 0 )) && ! pgrep -f "until grep -qE|zoo.sh serial" > /dev/null && break
      sleep "${ZOO_POLL:-30}"
    done
    echo "wall time since start: $(( $(date +%s) - $(cat $runs/started) )) s"
    ;;
  collect)
    out=$2
    pkill -TERM -f "mtp.js train" && sleep 20
    pkill -f "until grep -qE"
    mkdir -p "$out/models"
    ZOO_MACHINE_NOTE="$(jobs | wc -l) runs at once" "$node" $d/zoo_export.js $runs "$out/models"
    for r in $runs/*/; do # unfinished: the run folder itself, to finish with --resume
      n=$(basename "$r")
      # what --resume needs (the last checkpoint, config, metrics), not the one before it: the files that come back are limited
      [ -e "$out/models/$n/weights.f16" ] || { mkdir -p "$out/models/unfinished/$n" && cp "$r"/model.ckpt "$r"/config.json "$r"/metrics.jsonl "$out/models/unfinished/$n/"; }
    done
    for r in $runs/*/; do cp "$r/metrics.jsonl" "$out/models/$(basename "$r").metrics.jsonl" 2>/dev/null; done
    cp $runs/*.log "$out/models/" 2>/dev/null
    (cd "$out" && tar -cf - models | split -b 15m - zoo.tar.part- && rm -rf models && ls -la) # files come back 16 MiB at most
    ;;
  *)
    echo "usage: bash bench/gpu/zoo.sh start [steps] | wait [seconds] | collect DIR" >&2
    exit 2
    ;;
esac
