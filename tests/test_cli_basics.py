"""The command's basics: --version, ``python -m spnkit``, an example under every subcommand's
--help, and a shell completion script that completes subcommands and options."""

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from spnkit import cli
from spnkit.cli_basics import subcommands


def python_m_spnkit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "spnkit", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_python_m_spnkit_prints_the_installed_version():
    done = python_m_spnkit("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"spnkit {importlib.metadata.version('spnkit')}"


def test_python_m_spnkit_reports_mistakes_as_the_command_does():
    done = python_m_spnkit("run")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", sorted(subcommands(cli.parser())))
def test_every_subcommand_help_shows_an_example_of_itself(name, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    examples = help_text.split("examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("  spnkit ") for line in examples)
    assert any(name in line.split()[1:3] for line in examples)  # `spnkit NAME` or `spnkit --flag NAME`


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completion_completes_subcommands_and_options(tmp_path, capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = tmp_path / "spnkit.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        command = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
                   f"COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_spnkit; echo ${{COMPREPLY[@]}}")
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout.split()

    assert complete("spnkit", "sa") == ["sample"]
    assert complete("spnkit", "sample", "--te") == ["--temperature"]
    assert "completion" in complete("spnkit", "co")


def test_output_cut_short_by_its_reader_ends_quietly():
    """``spnkit options | head``: the reader leaves before spnkit writes; no BrokenPipe traceback."""
    env = {**os.environ, "SPNKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.Popen([sys.executable, "-m", "spnkit", "options"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    run.stdout.close()  # the reader is gone before the first line
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 1 and stderr == "", stderr
