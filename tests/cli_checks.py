"""Checks of the CLI's error contract, shared by the verbs' tests: one `error: ...` line and its exit code."""

from __future__ import annotations


def one_error_line(result, code: int = 2) -> str:
    """The only non-blank line of a click result, after checking the exit code and the `error: ` prefix."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def assert_one_line_error(result, *words: str) -> None:
    """Exit code 2 and one `error: ...` line that holds every one of `words`."""
    line = one_error_line(result)
    for word in words:
        assert word in line, line
