"""The man page (ngxscope.1) and the bash completion, both from the CLI's argparse definitions.

    python packaging/argparse_docs.py man OUT [--date YYYY-MM-DD]
    python packaging/argparse_docs.py bash OUT

Run by packaging/build-deb.sh with the package's own interpreter, so the documented options
are exactly those of the ngxscope being packaged.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass, field

from ngxscope import __version__
from ngxscope.cli import _build_parser

__all__ = ["Command", "bash_completion", "commands", "main", "man_page"]

FILE_DESTS = frozenset({"output", "file", "binary", "rotate_dir", "ssh_key", "screenshot"})
"""Options (by dest) whose value is a path: completed with file names."""
DIR_DESTS = frozenset({"rotate_dir"})


@dataclass(slots=True)
class Command:
    """One level of the command line: the top level ("") or a subcommand."""

    name: str
    """Subcommand name ("" for the top level)."""
    help: str
    """One-line description."""
    options: list[argparse.Action] = field(default_factory=list)
    """Optional arguments, in definition order (help excluded)."""
    positionals: list[argparse.Action] = field(default_factory=list)
    """Positional arguments (the subcommand selector excluded)."""


def _split(parser: argparse.ArgumentParser, name: str, help_text: str) -> Command:
    cmd = Command(name, help_text)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        (cmd.options if action.option_strings else cmd.positionals).append(action)
    return cmd


def commands(parser: argparse.ArgumentParser | None = None) -> list[Command]:
    """The top level, then each subcommand in definition order."""
    parser = parser or _build_parser()
    out = [_split(parser, "", parser.description or "")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append(_split(sub, name, helps.get(name, "")))
    return out


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _metavar(action: argparse.Action) -> str:
    if action.choices:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper()


# ----------------------------------------------------------------------------- man page


_ROFF_GLYPHS = {"\u2026": "...", "\u2013": "\\(en", "\u2014": "\\(em", "\u2192": "\\(->",
                "\u00b5": "\\(mc"}
"""Typographic characters help texts use, as roff's own glyphs (man renders on ASCII too)."""


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, typographic glyphs, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    for char, glyph in _ROFF_GLYPHS.items():
        text = text.replace(char, glyph)
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(default)" in text:
        text = text % {"default": action.default}
    return text


def _option_lines(action: argparse.Action) -> list[str]:
    names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
    if _takes_value(action):
        names += f" \\fI{_roff(_metavar(action))}\\fR"
    lines = [".TP", names]
    if action.help:
        lines.append(_roff(_help(action)))
    return lines


def _usage(cmd: Command) -> str:
    parts = ["\\fBngxscope\\fR"]
    if cmd.name:
        parts.append(f"\\fB{cmd.name}\\fR")
    if cmd.options:
        parts.append("[\\fIOPTIONS\\fR]")
    for p in cmd.positionals:
        parts.append(f"\\fI{_roff(_metavar(p) if p.metavar else p.dest.upper())}\\fR")
    if not cmd.name:
        parts.append("[\\fICOMMAND\\fR]")
    return " ".join(parts)


def man_page(date: str | None = None) -> str:
    """ngxscope(1) in roff (man macros)."""
    date = date or datetime.date.today().isoformat()
    cmds = commands()
    top, subs = cmds[0], cmds[1:]
    out = [
        f'.TH NGXSCOPE 1 "{date}" "ngxscope {__version__}" "User Commands"',
        ".SH NAME",
        "ngxscope \\- see every HTTP request a running nginx handles, live (eBPF)",
        ".SH SYNOPSIS",
        _usage(top),
        ".br",
        *(x for c in subs for x in (_usage(c), ".br")),
        ".SH DESCRIPTION",
        _roff("ngxscope attaches eBPF uprobes to a running nginx's own I/O functions and "
              "decodes what it reads and writes into HTTP exchanges: TLS in plaintext, timings, "
              "sizes, the worker, and every upstream attempt. Without a command it opens the "
              "window (with the attach dialog, or attached to --pid)."),
        ".PP",
        _roff("The window runs as the user. Capturing needs root (or CAP_BPF and CAP_PERFMON): "
              "installed from the Debian package, the window starts the capture helper "
              "/usr/libexec/ngxscope/ngxscope-capture-helper through pkexec, which asks polkit "
              "for the action org.ngxscope.record (administrator authentication, kept for a "
              "while). The helper accepts only a PID and streams to the window; files are "
              "written by the window, as the user."),
        ".SH OPTIONS",
    ]
    for action in top.options:
        out += _option_lines(action)
    out.append(".SH COMMANDS")
    for cmd in subs:
        out += [f".SS {cmd.name}", _roff(cmd.help + ".") if cmd.help else ""]
        for p in cmd.positionals:
            out += [".TP", f"\\fI{_roff(_metavar(p) if p.metavar else p.dest.upper())}\\fR",
                    _roff(_help(p) or "a session (.ngxs) or HAR file")]
        for action in cmd.options:
            out += _option_lines(action)
    out += [
        ".SH EXIT STATUS",
        "0 on success, 1 on an error (one line on standard error), 2 on a usage error.",
        ".SH FILES",
        ".TP",
        "\\fI/etc/ngxscope/ngxscope.conf\\fR",
        _roff("Settings of ngxscope-record.service (a headless capture for metrics, traces and "
              "rotating session files)."),
        ".TP",
        "\\fI/usr/share/polkit\\-1/actions/org.ngxscope.record.policy\\fR",
        _roff("Who may start the capture helper (override with a polkit rule, e.g. for a group)."),
        ".SH SEE ALSO",
        "\\fBnginx\\fR(8), \\fBpkexec\\fR(1), \\fBpolkit\\fR(8)",
    ]
    return "\n".join(line for line in out if line != "") + "\n"


# ----------------------------------------------------------------------------- bash completion


def _words(items: list[str]) -> str:
    return " ".join(items)


def bash_completion() -> str:
    """A self-contained bash completion script (no bash-completion helpers needed)."""
    cmds = commands()
    names = [c.name for c in cmds[1:]]
    value_cases: list[str] = []
    seen: set[tuple[str, str]] = set()
    option_words: dict[str, list[str]] = {}
    positional_files: list[str] = []
    for cmd in cmds:
        words = [o for a in cmd.options for o in a.option_strings]
        if not cmd.name:
            words += ["--help", "--version"]
        else:
            words.append("--help")
        option_words[cmd.name] = sorted(set(words))
        if cmd.positionals:
            positional_files.append(cmd.name)
        for a in cmd.options:
            if not _takes_value(a):
                continue
            if a.choices:
                reply = f'COMPREPLY=($(compgen -W "{_words([str(c) for c in a.choices])}" -- "$cur"))'
            elif a.dest in DIR_DESTS:
                reply = 'COMPREPLY=($(compgen -d -- "$cur"))'
            elif a.dest in FILE_DESTS:
                reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
            elif a.dest == "pid":
                reply = 'COMPREPLY=($(compgen -W "$(pgrep -d " " -x nginx 2>/dev/null)" -- "$cur"))'
            else:
                reply = "COMPREPLY=()"
            for o in a.option_strings:
                if (cmd.name, o) not in seen:
                    seen.add((cmd.name, o))
                    value_cases.append(f'        "{cmd.name}:{o}") {reply}; return ;;')
    opts_cases = [f'        "{name}") opts="{_words(words)}" ;;' for name, words in option_words.items()]
    return "\n".join([
        "# bash completion for ngxscope (generated from its argparse definitions)",
        "_ngxscope() {",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd="" i opts',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f'            {"|".join(names)}) cmd=${{COMP_WORDS[i]}}; break ;;',
        "        esac",
        "    done",
        '    case "$cmd:$prev" in',
        *value_cases,
        "    esac",
        '    case "$cmd" in',
        *opts_cases,
        "    esac",
        '    if [[ $cur == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        '    elif [[ -z $cmd ]]; then',
        f'        COMPREPLY=($(compgen -W "{_words(names)}" -- "$cur"))',
        f'    elif [[ " {_words(positional_files)} " == *" $cmd "* ]]; then',
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        "complete -o filenames -F _ngxscope ngxscope",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ngxscope's man page or bash completion, from argparse")
    p.add_argument("kind", choices=["man", "bash"])
    p.add_argument("output")
    p.add_argument("--date", help="the man page's date (default: today)")
    args = p.parse_args(argv)
    text = man_page(args.date) if args.kind == "man" else bash_completion()
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
