"""Run the test suite on every supported CPython that is installed (nox -s tests)."""
import os
import shutil
import subprocess

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True


def _add_pyenv_versions_to_path() -> None:
    """pyenv keeps 3.9-3.13 out of PATH unless they are 'global': put them in for nox."""
    if shutil.which("pyenv") is None:
        return
    versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split()
    bins = []
    for version in versions:
        prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True).stdout.strip()
        if prefix:
            bins.append(os.path.join(prefix, "bin"))
    os.environ["PATH"] = os.pathsep.join(bins + [os.environ.get("PATH", "")])


_add_pyenv_versions_to_path()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Build the extension and run the suite (pass pytest arguments after --)."""
    session.install(".[test]")
    # Run from a temporary directory so the installed package, not ./src, is imported.
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", session.invoked_from,
                "-c", os.path.join(session.invoked_from, "pyproject.toml"),
                os.path.join(session.invoked_from, "tests"), *session.posargs)
