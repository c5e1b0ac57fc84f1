#!/usr/bin/env bash
# The extension must not leak or corrupt (issue 6). Builds alloccount in throwaway venvs and
# runs the core tests under the sanitizers and valgrind; any report fails (non-zero exit).
#
#   asan      AddressSanitizer + UndefinedBehaviorSanitizer, CPython's default allocator
#             (pymalloc: the nested pymalloc -> PyMem_RawMalloc calls are exercised), all core tests
#   lsan      the same build with LeakSanitizer and PYTHONMALLOC=malloc, the engine tests
#   valgrind  memcheck on an ordinary -O2 -g build, PYTHONMALLOC=malloc, a core subset
#
# Usage: .ci/sanitize.sh [asan] [lsan] [valgrind]     (no argument: all three)
# Env:   SANITIZE_KEEP=1 keeps the temp dir (logs, venvs); SANITIZE_PYTHON (3.11) and
#        VALGRIND_PYTHON override the interpreters picked below.
#
# Why clang-19 and not gcc: gcc 12's libasan is not fork-safe. With threads allocating, a
# forked child deadlocked inside ASan's allocator (SizeClassAllocator64::GetFromAllocator: a
# size-class mutex held by a parent thread at fork()); tests/test_fork.py hung. compiler-rt
# 18+ locks its allocator around fork(), and Debian 12 ships clang-19 with its runtime. The
# runtime must come from the compiler that instrumented the code: the extension is built with
# clang-19 too. Python itself is not instrumented; the runtime is preloaded.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(asan lsan valgrind)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
started=$(date +%s)
step() { echo; echo "=== sanitize: $* ($(( $(date +%s) - started )) s)"; }
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

CORE_TESTS=(test_api test_engine test_fork test_coexistence test_oracle_tracemalloc test_categories
            test_scopes test_stress)
# LeakSanitizer: the engine's lifecycle (start/stop/restart, threads, fork, pass-through under
# tracemalloc). memray stays out: its native hooks sit between every caller and malloc, so a
# leak found there could not be told apart from memray's own.
LSAN_TESTS=(test_api test_engine test_fork test_coexistence test_stress -k "not memray and not stacking")
# valgrind: the engine's semantics, threads, fork, scopes, the tracemalloc oracle (~30 s here).
# Not test_stress: its scenarios are timed, and under valgrind they would measure valgrind.
VALGRIND_TESTS=(test_api test_engine test_fork test_scopes test_oracle_tracemalloc)

# ------------------------------------------------------------------ system packages (Debian 12)
step "system packages"
CLANG=clang-19
SYMBOLIZER=/usr/lib/llvm-19/bin/llvm-symbolizer
need=()
command -v "$CLANG" >/dev/null || need+=(clang-19)
command -v "$CLANG" >/dev/null && [ -e "$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.so)" ] ||
    need+=(libclang-rt-19-dev)
[ -x "$SYMBOLIZER" ] || need+=(llvm-19)  # symbolized stacks in the reports
command -v valgrind >/dev/null || need+=(valgrind)
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
ASAN_RT=$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.so)

# CPython X.Y: pyenv's newest patch release, else the system's; empty if neither.
find_python() {
    local v=$1 prefix
    if command -v pyenv >/dev/null && prefix=$(pyenv prefix "$v" 2>/dev/null) && [ -x "$prefix/bin/python$v" ]; then
        echo "$prefix/bin/python$v"
    elif command -v "python$v" >/dev/null; then
        command -v "python$v"
    fi
}
PY311=${SANITIZE_PYTHON:-$(find_python 3.11)}
if [ -z "$PY311" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev >/dev/null
    PY311=$(command -v python3.11)
fi
# valgrind on 3.12: CPython 3.11 floods memcheck with uninitialised-value reports of its own
# (measured over tests/test_engine.py: 1,981 errors in 40 contexts, none with a frame of ours).
# _PyLong_New(0) leaves the unused digit uninitialised, medium_value() multiplies it by 0, and
# the small-int pointer computed from that taints every later Py_INCREF of it. 3.12
# initialises the digit and runs these tests with zero reports. Without a 3.12, 3.11 runs
# without the uninitialised-value checks (invalid reads, writes and frees are still checked).
VG_PY=${VALGRIND_PYTHON:-$(find_python 3.12)}
VG_PY=${VG_PY:-$PY311}
VG_EXTRA=()
if ! "$VG_PY" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    VG_EXTRA=(--undef-value-errors=no)
    echo "warning: valgrind on $("$VG_PY" -V) runs with --undef-value-errors=no (no CPython 3.12 found)"
fi
echo "clang: $("$CLANG" --version | head -1); ASan runtime: $ASAN_RT"
echo "sanitizers on $("$PY311" -V) ($PY311); valgrind on $("$VG_PY" -V) ($VG_PY)"

# ------------------------------------------------------------------ throwaway tree and venvs
work=$(mktemp -d "${TMPDIR:-/tmp}/alloccount-sanitize.XXXXXX")
cleanup() { if [ "${SANITIZE_KEEP:-0}" = 1 ]; then echo "kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
mkdir -p "$work/src" "$work/logs" "$work/canary" "$work/run"

# Build from a copy (tracked, and untracked not ignored, files): a build in the repository
# would leave sanitized objects in build/ for the next ordinary build to reuse, or the reverse.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$work/src"

# make_venv <dir> <python> <packages...>. The build backend is installed here and the build
# runs without isolation, so CC/CFLAGS apply and nothing is downloaded at build time.
# setuptools is upgraded: the venv's bundled 65.5 rejects pyproject's license table.
make_venv() {
    local dir=$1 py=$2
    shift 2
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q -U "setuptools>=70" "Cython>=3.0" "$@"
}

# install_ext <venv> [VAR=value...]: a non-editable install of the copy, built from scratch.
install_ext() {
    local venv=$1
    shift
    rm -rf "$work/src/build"
    (cd "$work/src" && env "$@" "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall .)
}

# run_pytest <command prefix...> -- <test modules and pytest options...>. From an empty
# directory, so the installed build is imported, not a source tree.
run_pytest() {
    local cmd=() args=() a
    while [ "$1" != -- ]; do cmd+=("$1"); shift; done
    shift
    for a in "$@"; do
        case $a in
            test_*) if [ -e "$work/src/tests/$a.py" ]; then args+=("$work/src/tests/$a.py"); else echo "(no tests/$a.py)"; fi ;;
            *) args+=("$a") ;;
        esac
    done
    (cd "$work/run" && "${cmd[@]}" -m pytest -q -p no:cacheprovider --rootdir "$work/src" \
        -c "$work/src/pyproject.toml" "${args[@]}")
}

# Reports go to files (log_path, --log-file), so one from any process (pytest, a subprocess,
# a forked child) fails the stage even where a test would swallow the child's exit status.
reports() {
    local found
    found=$( (grep -l -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: [A-Za-z]+Sanitizer" \
                "$work"/logs/sanitizer.* 2>/dev/null
              grep -l -E "ERROR SUMMARY: [1-9]" "$work"/logs/valgrind.* 2>/dev/null) || true)
    if [ -n "$found" ]; then
        echo "!!! reports:"
        for f in $found; do echo "--- $f"; cat "$f"; done
        return 1
    fi
}

# ------------------------------------------------------------------ ASan + UBSan (+ LSan)
# sanitizer_env <log dir> <detect_leaks>: sets SAN_ENV. One log_path for both: clang's combined
# runtime writes ASan's reports to UBSan's log_path when both are set. allocator_may_return_null=1: tests ask
# for impossible sizes on purpose (a failed allocation counts nothing); glibc returns NULL and
# so must ASan, instead of aborting.
sanitizer_env() {
    SAN_ENV=(LD_PRELOAD="$ASAN_RT" ASAN_SYMBOLIZER_PATH="$SYMBOLIZER"
        ASAN_OPTIONS="halt_on_error=1:detect_leaks=$2:allocator_may_return_null=1:log_path=$1/sanitizer"
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$1/sanitizer"
        LSAN_OPTIONS="suppressions=$work/lsan.supp:print_suppressions=0")
}
# Canaries: a stage that cannot fail proves nothing. An 8-byte block written with 16 bytes
# must be reported, and so must (for LeakSanitizer) a block nobody points to any more.
OVERFLOW='import ctypes; c = ctypes.CDLL(None); c.malloc.restype = ctypes.c_void_p; ctypes.memset(c.malloc(8), 0, 16)'
LEAK='import ctypes; ctypes.CDLL(None).malloc(4096)'

# Leaks that are CPython's, verified with no alloccount in the process.
cat > "$work/lsan.supp" <<'EOF'
# CPython 3.11 tracemalloc: tracebacks made by traceback_new() are unreachable after
# tracemalloc.stop() (72 bytes in 3 allocations with tracemalloc alone).
leak:traceback_new
EOF

if want asan || want lsan; then
    step "venv ($("$PY311" -V)) and an ASan+UBSan build with $CLANG"
    make_venv "$work/venv-asan" "$PY311" "pytest>=7" pytest-timeout "hypothesis>=6" "memray>=1.10"
    install_ext "$work/venv-asan" ALLOCCOUNT_SANITIZE=address,undefined CC="$CLANG" LDSHARED="$CLANG -shared"
    py=$work/venv-asan/bin/python
    # (not imported to find it: clang leaves the ASan runtime to the preload)
    core=$(find "$work/venv-asan/lib" -path "*/alloccount/_core*.so")
    symbols=$(nm -D "$core")
    for sym in __asan_report_load8 __ubsan_handle_; do
        grep -q "$sym" <<<"$symbols" || { echo "!!! $core is not instrumented ($sym missing)"; exit 1; }
    done
    sanitizer_env "$work/canary" 0
    if env "${SAN_ENV[@]}" "$py" -c "$OVERFLOW" 2>/dev/null ||
        ! grep -q heap-buffer-overflow "$work"/canary/sanitizer.*; then
        echo "!!! ASan canary: a heap overflow went unreported"; exit 1
    fi
    sanitizer_env "$work/canary" 1
    if env "${SAN_ENV[@]}" PYTHONMALLOC=malloc "$py" -c "$LEAK" 2>/dev/null ||
        ! grep -q "ERROR: LeakSanitizer" "$work"/canary/sanitizer.*; then
        echo "!!! LSan canary: a leak went unreported"; exit 1
    fi
fi

if want asan; then
    step "ASan+UBSan: core tests (pymalloc)"
    # No leak check here: pymalloc's arenas are mmap'd and not scanned, so every >512-byte
    # object still alive at exit would look leaked.
    sanitizer_env "$work/logs" 0
    run_pytest env "${SAN_ENV[@]}" "$py" -- "${CORE_TESTS[@]}"
    reports
fi

if want lsan; then
    step "ASan+UBSan+LSan: engine tests (PYTHONMALLOC=malloc: every object in the scanned heap)"
    sanitizer_env "$work/logs" 1
    run_pytest env "${SAN_ENV[@]}" PYTHONMALLOC=malloc "$py" -- "${LSAN_TESTS[@]}"
    reports
fi

# ------------------------------------------------------------------ valgrind memcheck
if want valgrind; then
    step "venv ($("$VG_PY" -V)) and an ordinary -O2 -g build"
    make_venv "$work/venv-vg" "$VG_PY" "pytest>=7" pytest-timeout
    install_ext "$work/venv-vg" CFLAGS=-g
    # The venv's python is a symlink to the real interpreter binary, never a pyenv shim.
    # --fair-sched=yes: valgrind runs one thread at a time, and with its default lock two
    # threads spinning in nogil loops starved the main thread (test_fork took > 300 s, 10 s fair).
    vg=(valgrind --tool=memcheck --error-exitcode=1 --fair-sched=yes --trace-children=yes --num-callers=40
        --suppressions="$repo/.ci/valgrind-python.supp" "${VG_EXTRA[@]}")
    if env PYTHONMALLOC=malloc "${vg[@]}" --log-file="$work/canary/valgrind.%p" "$work/venv-vg/bin/python" -c "$OVERFLOW" ||
        ! grep -q "Invalid write" "$work"/canary/valgrind.*; then
        echo "!!! valgrind canary: an invalid write went unreported"; exit 1
    fi
    step "valgrind memcheck: core subset (PYTHONMALLOC=malloc)"
    run_pytest env PYTHONMALLOC=malloc "${vg[@]}" --log-file="$work/logs/valgrind.%p" "$work/venv-vg/bin/python" \
        -- "${VALGRIND_TESTS[@]}"
    reports
fi

step "done: no sanitizer or valgrind report"
