#!/usr/bin/env bash
# The main job, end to end on the embedded default (SQLite + FAISS in a data folder, no server):
# set up, register a source, index a gallery of LFW people, then search with a held-back photo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

LFW="${LFW_DIR:-../shared/datasets/lfw}"
DATA="${FACESEARCH_HOME:-./facesearch-data}"
fs() { .venv/bin/facesearch --data "$DATA" "$@"; }

# Gallery: up to 8 photos each of the first 60 people (by name) with at least 4 photos, and
# every photo of the next 300 people as distractors; each person's first photo is held back.
mapfile -t GALLERY < <(.venv/bin/python - "$LFW" <<'PY'
import sys, pathlib
people = sorted(p for p in (pathlib.Path(sys.argv[1]) / "images").iterdir() if p.is_dir())
mates = [p for p in people if len(list(p.glob("*.jpg"))) >= 4][:60]
others = [p for p in people if p not in mates][:300]
for person in mates:
    for photo in sorted(person.glob("*.jpg"))[1:9]:
        print(photo)
for person in others:
    for photo in sorted(person.glob("*.jpg")):
        print(photo)
print("PROBE", sorted(mates[7].glob("*.jpg"))[0])
PY
)
PROBE="${GALLERY[-1]#PROBE }"
unset 'GALLERY[-1]'

fs source list | grep -q '^lfw-demo' || fs source add lfw-demo --lawful-basis legitimate_interests \
  --jurisdiction US --description "LFW research photos (UMass Amherst), demonstration only"
fs ingest "${GALLERY[@]}" --source lfw-demo
fs case list | grep -q '^DEMO-1' || fs case open DEMO-1 --purpose "missing person" --offence "missing person"
echo
echo "searching with held-back photo $PROBE, in case DEMO-1"
fs search "$PROBE" --case DEMO-1 --top 5
echo
echo "for the web app, create its first admin, then serve on http://127.0.0.1:8000:"
echo "  .venv/bin/facesearch --data $DATA user bootstrap-admin admin --organisation Demo"
echo "  .venv/bin/facesearch --data $DATA serve"
