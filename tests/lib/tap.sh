# tests/lib/tap.sh: minimal TAP producer for shell tests run by prove.
# Source it, call the assertions, end with done_testing. Every failure prints
# both the expected and the actual value as TAP diagnostics, and repeats them
# on stderr, which prove shows even when not verbose, so a CI log says what
# failed and why.
_tap_n=0
_tap_fail=0
_tap_err() { printf '%s\n' "$@" >&2; }
ok() { # ok STATUS NAME  (use: cmd; ok $? "name")
    _tap_n=$((_tap_n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $_tap_n - $2"
    else
        echo "not ok $_tap_n - $2"
        _tap_err "not ok $_tap_n - $2"
        _tap_fail=$((_tap_fail + 1))
        return 1
    fi
}
is() { # is ACTUAL EXPECTED NAME
    _tap_n=$((_tap_n + 1))
    if [ "$1" = "$2" ]; then
        echo "ok $_tap_n - $3"
    else
        echo "not ok $_tap_n - $3"
        _tap_fail=$((_tap_fail + 1))
        printf '#   expected: %s\n#        got: %s\n' "$2" "$1"
        _tap_err "not ok $_tap_n - $3" "#   expected: $2" "#        got: $(printf '%s' "$1" | head -c 2000)"
        return 1
    fi
}
like() { # like ACTUAL SUBSTRING NAME
    _tap_n=$((_tap_n + 1))
    case "$1" in
    *"$2"*) echo "ok $_tap_n - $3" ;;
    *)
        echo "not ok $_tap_n - $3"
        _tap_fail=$((_tap_fail + 1))
        printf '#   expected to contain: %s\n#                   got: %s\n' "$2" "$1" | head -20
        _tap_err "not ok $_tap_n - $3" "#   expected to contain: $2" "#   got (tail): $(printf '%s' "$1" | tail -c 1500)"
        return 1
        ;;
    esac
}
unlike() { # unlike ACTUAL SUBSTRING NAME
    _tap_n=$((_tap_n + 1))
    case "$1" in
    *"$2"*)
        echo "not ok $_tap_n - $3"
        _tap_fail=$((_tap_fail + 1))
        printf '#   expected not to contain: %s\n' "$2"
        _tap_err "not ok $_tap_n - $3 (it contains: $2)"
        return 1
        ;;
    *) echo "ok $_tap_n - $3" ;;
    esac
}
diag() {
    printf '# %s\n' "$*"
    [ "$_tap_fail" -gt 0 ] && printf '# %s\n' "$*" >&2
    return 0
}
skip() { # skip NAME REASON: a check that cannot mean anything here, said so in the TAP stream
    _tap_n=$((_tap_n + 1))
    echo "ok $_tap_n - $1 # SKIP $2"
}
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
bail() { echo "Bail out! $*"; exit 255; }
done_testing() { echo "1..$_tap_n"; [ "$_tap_fail" -eq 0 ]; }
