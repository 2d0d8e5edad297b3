# Shared by the image build scripts (sourced): build an image once per set of inputs.
#
#   cache_open OUT                 absolute $out and $stamp; one build per directory at a time
#   cache_skip_if_fresh NAME LINES the inputs' hash in $want; exit 0 when OUT is built from them
#   cache_seal                     record $want once OUT is in place
#
# LINES (on stdin) describe inputs outside the scripts (package versions, a kernel); the hash
# also covers this file, the calling script and every file of its source folder $src.

pkgver() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null || true; }

cache_open() {
    mkdir -p "$(dirname "$1")"
    out=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    stamp=$out.stamp
    exec 9<"$(dirname "$out")"   # serialise concurrent builds into the same directory
    flock 9
}

cache_skip_if_fresh() {
    want=$( {
        cat
        sha256sum "${BASH_SOURCE[0]}" "${BASH_SOURCE[1]}"
        (cd "$src" && sha256sum $(ls -A | sort))
    } | sed "s|  .*/|  |" | sha256sum | cut -d' ' -f1)
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$1: $out up to date"
        exit 0
    fi
}

cache_seal() { echo "$want" > "$stamp"; }
