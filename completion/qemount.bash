# SPDX-License-Identifier: BSD-3-Clause
# bash completion for qemount(1).
#
# The options and their choices are read from `qemount CMD --help`, so
# this file never falls out of step with the command: an option shown
# as "[--via kernel|vm|auto]" completes to its three words, one shown as
# "--overlay PATH" or "--key-file FILE|-" to file names.

# _qemount_help WORDS...: the usage text of `qemount WORDS --help`.
_qemount_help ()
{
  "${COMP_WORDS[0]}" "$@" --help 2>/dev/null
}

# _qemount_choices HELP OPTION: what OPTION takes, from the usage text:
# its choices ("kernel vm auto" for "--via kernel|vm|auto"), "@file" for
# a file (FILE, PATH, DIR), "-" for no value, nothing for other values
# (N, SIZE, VG/LV...).
_qemount_choices ()
{
  local arg
  arg=$(grep -oE -- "(^|[[ ])$2( [^] [|]+(\|[^] [|]+)*)?" <<< "$1" | head -n 1)
  arg=${arg#*"$2"}
  arg=${arg# }
  case $arg in
    "") echo - ;;
    *FILE*|*PATH*|*DIR*) echo @file ;;
    *[a-z]*) echo "${arg//|/ }" ;;
  esac
}

# The directories and ids qemount list shows, for qemount umount.
_qemount_mounts ()
{
  "${COMP_WORDS[0]}" list --json 2>/dev/null |
    grep -oE '"(mountpoint|id)": "([^"\\]|\\.)*"' | sed 's/^[^:]*: "//; s/"$//'
}

_qemount ()
{
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local cmd="" cmd_at=0 sub="" help choices i
  COMPREPLY=()

  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -*) ;;
      *) if [ -z "$cmd" ]; then cmd=${COMP_WORDS[i]} cmd_at=$i
         elif [ "$cmd" = snapshot ] && [ -z "$sub" ]; then sub=${COMP_WORDS[i]}
         fi ;;
    esac
  done

  if [ -z "$cmd" ]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W "--help --version --verbose" -- "$cur"))
    else
      help=$(_qemount_help)
      COMPREPLY=($(compgen -W "$(sed -n 's/^  \([a-z]\+\) .*/\1/p' <<< "$help")" -- "$cur"))
    fi
    return
  fi
  if [ "$cmd" = snapshot ] && [ -z "$sub" ]; then
    COMPREPLY=($(compgen -W "create commit info verify" -- "$cur"))
    return
  fi
  if [ "$cmd" = guest ]; then
    COMPREPLY=($(compgen -W "build info" -- "$cur"))
    return
  fi

  help=$(_qemount_help $cmd)
  [ -n "$sub" ] && help=$(grep -A3 -- "snapshot $sub " <<< "$help")
  if [[ $prev == -* ]]; then
    choices=$(_qemount_choices "$help" "$prev")
    case $choices in
      -) ;;
      @file) compopt -o filenames 2>/dev/null || :
             COMPREPLY=($(compgen -f -- "$cur"))
             return ;;
      *) COMPREPLY=($(compgen -W "$choices" -- "$cur"))
         return ;;
    esac
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(grep -oE -- '--[a-z][a-z-]*' <<< "$help" | sort -u) --help" -- "$cur"))
    return
  fi
  compopt -o filenames 2>/dev/null || :
  if [ "$cmd" = umount ]; then
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(_qemount_mounts)" -- "$cur"))
  elif [ "$cmd" = mount ] && [ -n "$(_qemount_positional)" ]; then
    COMPREPLY=($(compgen -d -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

# _qemount_positional: prints something if a positional argument (the
# IMAGE) already comes before the word being completed.
_qemount_positional ()
{
  local i seen=0 takes
  for ((i = cmd_at + 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -*) takes=$(_qemount_choices "$help" "${COMP_WORDS[i]}")
          [ "$takes" != - ] && ((i++)) ;;
      *) seen=1 ;;
    esac
  done
  [ $seen = 1 ] && echo yes
}

complete -F _qemount qemount
