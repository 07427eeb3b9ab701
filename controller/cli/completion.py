"""`sdnctl complete`: a bash (or zsh) completion script made from the parser itself, so every command and
option (plug-ins' too) completes without a list kept by hand.

The script holds, per command path ("sdnctl network list"), the words that may follow: subcommands and
options. Completing walks the words typed so far, keeping those that extend a known path.
"""

from __future__ import annotations

import argparse
import shlex

_FUNCTION = """_sdnctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" path=sdnctl next w i
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        next="$path $w"
        if [[ $w != -* && -n "${_sdnctl_words[$next]+set}" ]]; then
            path="$next"
        fi
    done
    COMPREPLY=($(compgen -W "${_sdnctl_words[$path]}" -- "$cur"))
}
complete -F _sdnctl sdnctl
"""


def words(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Command path -> the subcommands and options that may follow it."""
    table: dict[str, list[str]] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        subcommands: list[str] = []
        options: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    subcommands.append(name)
                    walk(child, f"{path} {name}")
            else:
                options += [o for o in action.option_strings if o.startswith("--") or o in ("-f", "-c")]
        table[path] = sorted(set(subcommands)) + sorted(set(options))

    walk(parser, "sdnctl")
    return table


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    lines = [f'# {shell} completion for sdnctl: eval "$(sdnctl complete --shell {shell})"']
    if shell == "zsh":
        lines.append("autoload -U +X bashcompinit && bashcompinit")
    lines.append("typeset -gA _sdnctl_words")
    lines.append("_sdnctl_words=(")
    for path, follow in words(parser).items():
        lines.append(f"    [{shlex.quote(path)}]={shlex.quote(' '.join(follow))}")
    lines.append(")")
    return "\n".join(lines) + "\n" + _FUNCTION
