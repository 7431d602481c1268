#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# loopctl's bash completion, driven the way bash drives it: COMP_WORDS and
# COMP_CWORD set, _loopctl called, COMPREPLY read. TAP output.
#   test-completion.sh COMPLETION-FILE

completion=$1
framework=/usr/share/bash-completion/bash_completion

if [ ! -r "$framework" ]; then
        echo "1..0 # SKIP no bash-completion ($framework)"
        exit 0
fi
# shellcheck disable=SC1090
. "$framework"
# shellcheck disable=SC1090
. "$completion"

n=0
failed=0

# comp WORD... : the sorted candidates for the last word.
comp() {
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        # compopt complains outside a real completion; what it sets is not
        # under test.
        _loopctl loopctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>/dev/null
        printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'
}

check() {
        local name=$1 expected=$2 got=$3
        n=$((n + 1))
        if [ "$got" = "$expected" ]; then
                echo "ok $n $name"
        else
                echo "not ok $n $name"
                echo "# expected '$expected', got '$got'"
                failed=1
        fi
}

contains() {
        local name=$1 word=$2 got=$3
        n=$((n + 1))
        case " $got " in
        *" $word "*) echo "ok $n $name" ;;
        *) echo "not ok $n $name"; echo "# '$word' not in '$got'"; failed=1 ;;
        esac
}

complete -p loopctl >/dev/null 2>&1 && check "registered for loopctl" yes yes || check "registered for loopctl" yes no
check "commands" "create" "$(comp loopctl cr)"
check "all commands" "create info list refresh-size remove with" "$(comp loopctl '')"
check "create options" "--sector-size" "$(comp loopctl create --sec)"
check "losetup's spelling" "--sizelimit" "$(comp loopctl create --sizel)"
check "sector sizes" "1024" "$(comp loopctl create -b 1)"
check "a value is no command" "--sector-size" "$(comp loopctl -o 1M create --sec)"
check "columns" "BACK-FILE BACK-INO BACK-MAJ:MIN" "$(comp loopctl list -O BACK-)"
check "columns after a comma" "NAME,RO" "$(comp loopctl list -O NAME,R)"
check "columns to add" "+DIO +DISKSEQ" "$(comp loopctl list -O +DI)"
check "direct-io values" "off on" "$(comp loopctl create --direct-io=)"
check "list options" "--output --output-all" "$(comp loopctl list --outp)"
check "remove --all" "--all" "$(comp loopctl remove --a)"
check "losetup command line" "--detach --detach-all" "$(comp loopctl --det)"
contains "with: CMD after --" "echo" "$(comp loopctl with disk.img -- ech)"
contains "with offers --" "--" "$(comp loopctl with disk.img --)"

echo "1..$n"
exit $failed
