"""The documentation keeps up with the code: every ``sphaera`` command and every option its
``--help`` shows is named in ``docs/cli.md``, every relative link in the README and the
``docs/`` pages reaches a file (and a heading, when it names one), and the README opens
with its set-up commands.

``docs/cli.md`` has one section per command, headed ``## sphaera COMMAND`` (``## sphaera``
for the group itself); an option counts as documented when its name appears in its
command's section, or in a section of the same page that the command's section links to
(the client options shared by every client command).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from sphaera_crdt.cli.app import cli

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"
LINKED_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_ANCHOR_TAG = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


# -- reading markdown ----------------------------------------------------------------------


def _lines_outside_code(text: str) -> Iterator[tuple[str, bool]]:
    """Each line with whether it lies outside a fenced code block (fences count as inside)."""
    inside = False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
            yield line, False
            continue
        yield line, not inside


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped
    (hyphens and underscores kept), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs (repeats numbered as GitHub does) and
    explicit ``<a id=...>`` tags."""
    found: set[str] = set(_ANCHOR_TAG.findall(text))
    seen: dict[str, int] = {}
    for line, outside in _lines_outside_code(text):
        match = _HEADING.match(line) if outside else None
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def sections(text: str) -> dict[str, str]:
    """The text under each heading (until the next heading of the same or a higher level),
    by the heading's title with inline code marks removed."""
    heads: list[tuple[int, int, str]] = []  # (line index, level, title)
    lines = text.splitlines()
    for index, (line, outside) in enumerate(_lines_outside_code(text)):
        match = _HEADING.match(line) if outside else None
        if match is not None:
            heads.append((index, len(match.group(1)), match.group(2).replace("`", "")))
    found: dict[str, str] = {}
    for position, (start, level, title) in enumerate(heads):
        end = next((i for i, lv, _ in heads[position + 1 :] if lv <= level), len(lines))
        found[title] = "\n".join(lines[start + 1 : end])
    return found


# -- the CLI against its page --------------------------------------------------------------


def commands(
    group: click.Command = cli, path: tuple[str, ...] = ("sphaera",)
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command, groups included, with its full name and a context like the one a
    real invocation builds (so inherited settings such as ``-h`` show)."""
    parent = click.Context(group, info_name=path[0], **group.context_settings)
    yield " ".join(path), group, parent
    yield from _subcommands(group, path, parent)


def _subcommands(
    group: click.Command, path: tuple[str, ...], parent: click.Context
) -> Iterator[tuple[str, click.Command, click.Context]]:
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(parent):
        command = group.get_command(parent, name)
        assert command is not None, f"{' '.join(path)} lists {name} but cannot load it"
        if command.hidden:
            continue
        context = click.Context(command, info_name=name, parent=parent, **command.context_settings)
        yield " ".join((*path, name)), command, context
        yield from _subcommands(command, (*path, name), context)


def option_names(
    command: click.Command, context: click.Context, *, with_help: bool = True
) -> list[str]:
    """The option names ``--help`` shows for a command (``--ok/--not-ok`` gives both), the
    help option's own names unless ``with_help`` is false."""
    help_option = command.get_help_option(context)
    names: list[str] = []
    for param in command.get_params(context):
        if isinstance(param, click.Option) and not param.hidden:
            if param is help_option and not with_help:
                continue
            names.extend(param.opts)
            names.extend(param.secondary_opts)
    return names


def _names(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def undocumented(page: str) -> list[str]:
    """``COMMAND`` for each command without a section in ``page``, ``COMMAND OPTION`` for
    each option its command's section (with the sections it links to) does not name.

    The help option is the same for every command (the group's context settings pass it
    down), so the group's section names it for all of them.
    """
    by_title = sections(page)
    by_anchor = {slug(title): body for title, body in by_title.items()}
    missing: list[str] = []
    for name, command, context in commands():
        body = by_title.get(name)
        if body is None:
            missing.append(name)
            continue
        linked = [by_anchor.get(anchor, "") for anchor in re.findall(r"\]\(#([^)\s]+)\)", body)]
        text = "\n".join([body, *linked])
        missing.extend(
            f"{name} {option}"
            for option in option_names(command, context, with_help=name == "sphaera")
            if not _names(option, text)
        )
    return missing


def test_every_command_and_option_is_in_the_cli_page() -> None:
    assert undocumented(CLI_DOC.read_text(encoding="utf-8")) == []


def test_the_readme_names_every_command() -> None:
    """The README's command table names every command (its options are in the CLI page)."""
    readme = README.read_text(encoding="utf-8")
    leaves = [
        name
        for name, command, _ in commands()
        if name != "sphaera" and not isinstance(command, click.Group)
    ]
    assert "sphaera bench convergence" in leaves
    missing = [name for name in leaves if f"`{name}" not in readme]
    assert missing == [], f"not in the README: {missing}"


def test_the_check_sees_every_command_and_its_options() -> None:
    """The walk reaches nested commands and the options of each; the page check is not
    vacuous."""
    found = {name: option_names(command, context) for name, command, context in commands()}
    assert {"sphaera", "sphaera serve", "sphaera bench", "sphaera bench convergence"} <= set(found)
    assert "--max-clock-skew" in found["sphaera serve"]
    assert {"--ok", "--not-ok"} <= set(found["sphaera observe"])
    assert "-h" in found["sphaera put"]  # inherited from the group's context settings
    assert {"--url", "--json"} <= set(found["sphaera entities"])


def test_a_missing_option_or_command_is_reported() -> None:
    page = CLI_DOC.read_text(encoding="utf-8")
    serve = sections(page)["sphaera serve"]
    assert "--max-clock-skew" in serve
    without_option = page.replace(serve, serve.replace("--max-clock-skew", "--clock-skew"))
    assert undocumented(without_option) == ["sphaera serve --max-clock-skew"]
    # an option named only in another command's section does not count
    watch = sections(page)["sphaera watch"]
    without_exec = page.replace(watch, watch.replace("--exec", "--run"))
    assert undocumented(without_exec) == ["sphaera watch --exec"]
    # a shared option counts only through the link to its section
    get = sections(page)["sphaera get"]
    unlinked = page.replace(get, get.replace("](#client-options)", "]"))
    assert "sphaera get --url" in undocumented(unlinked)
    # a command without a section
    without_demo = page.replace("## sphaera demo\n", "## The demo\n")
    assert undocumented(without_demo) == ["sphaera demo"]


# -- links ---------------------------------------------------------------------------------


def relative_links(page: Path) -> Iterator[str]:
    """The targets of the page's links that are neither absolute URLs nor mail, outside
    code."""
    for line, outside in _lines_outside_code(page.read_text(encoding="utf-8")):
        if not outside:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # links in inline code are examples
        for target in _LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                yield target


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file does not exist, or whose ``#anchor`` is not
    a heading (or ``<a id>``) of the Markdown file it names."""
    broken: list[str] = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and file.suffix == ".md":
            if anchor not in anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: page.name)
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds no page"
    assert pages <= linked, f"not linked from the README: {sorted(p.name for p in pages - linked)}"


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text(
        "# A `code` title, with punctuation\n\n## Twice\n\n## Twice\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-code-title-with-punctuation) [ok](there.md#twice-1) "
        "[gone](missing.md) [bad anchor](there.md#nowhere) [self](#local) "
        "[web](https://example.com/x.md) `[code](skipped.md)`\n\n"
        "```\n[in a block](also-skipped.md)\n```\n\n## Local\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md (no such file)",
        "page.md: there.md#nowhere (no such heading)",
    ]


# -- the README's first section ------------------------------------------------------------


def test_the_readme_opens_with_its_set_up_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first = next(title for title in sections(text) if title != "sphaera_crdt")
    assert first == "Set up"
    setup = sections(text)["Set up"]
    assert ".venv/bin/python examples/quickstart.py" in setup
    assert ".venv/bin/python -m pytest -q" in setup
    assert (ROOT / "examples" / "quickstart.py").exists()
